//! The consent page's words in every language it speaks: one catalogue for
//! the Leptos page and the server-rendered page alike. Texts with `{name}`
//! holes are filled with [`fill`].

/// A language the page is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    De,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::De];

    /// The BCP 47 tag, for `lang` attributes and date formatting.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    /// The language for one tag (`de`, `de-AT`, `EN_gb`), if it is spoken here.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag
            .trim()
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        Lang::ALL.into_iter().find(|l| l.code() == primary)
    }

    /// The first spoken language in the reader's order of preference
    /// (`navigator.languages`); English when none is.
    pub fn negotiate<'a>(preferences: impl IntoIterator<Item = &'a str>) -> Lang {
        preferences
            .into_iter()
            .find_map(Lang::from_tag)
            .unwrap_or(Lang::En)
    }

    /// The best spoken language for an `Accept-Language` header, by its
    /// q-values (ties keep the header's order); English when none is.
    pub fn from_accept_language(header: &str) -> Lang {
        let mut best: Option<(u32, Lang)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("");
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            if q.is_nan() || q <= 0.0 {
                continue;
            }
            let weight = (q.min(1.0) * 1000.0) as u32;
            if let Some(lang) = Lang::from_tag(tag) {
                if best.is_none_or(|(w, _)| weight > w) {
                    best = Some((weight, lang));
                }
            }
        }
        best.map_or(Lang::En, |(_, lang)| lang)
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Lang::En => &EN,
            Lang::De => &DE,
        }
    }
}

/// `template` with each `{name}` replaced by its value.
/// A retention period in words: whole days, else whole hours, else
/// minutes (`90 days`, `1 Stunde`).
pub fn duration_words(ms: i64, lang: Lang) -> String {
    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    let ms = ms.max(MINUTE);
    let (n, unit) = if ms % DAY == 0 {
        (ms / DAY, 0)
    } else if ms % HOUR == 0 {
        (ms / HOUR, 1)
    } else {
        (ms / MINUTE, 2)
    };
    let word = match (lang, unit, n == 1) {
        (Lang::En, 0, true) => "day",
        (Lang::En, 0, false) => "days",
        (Lang::En, 1, true) => "hour",
        (Lang::En, 1, false) => "hours",
        (Lang::En, _, true) => "minute",
        (Lang::En, _, false) => "minutes",
        (Lang::De, 0, true) => "Tag",
        (Lang::De, 0, false) => "Tage",
        (Lang::De, 1, true) => "Stunde",
        (Lang::De, 1, false) => "Stunden",
        (Lang::De, _, true) => "Minute",
        (Lang::De, _, false) => "Minuten",
    };
    format!("{n} {word}")
}

pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                match values.iter().find(|(n, _)| *n == name) {
                    Some((_, value)) => out.push_str(value),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every text of the consent page. Holes: `{server}` the requesting
/// homeserver, `{address}`, `{mxid}`, `{is}` the identity server's display
/// name, `{at}` (decided) / `{expires}` / `{checked}` (signature) times, `{key}` a key id, `{reason}`,
/// `{operator}`, `{ascii}` a server name in ASCII, `{sent}` the address as
/// the request spelt it.
pub struct Texts {
    pub loading: &'static str,
    pub pending_title: &'static str,
    pub nothing_changes: &'static str,
    pub asked_by: &'static str,
    pub matrix_id: &'static str,
    pub your_address: &'static str,
    pub identity_server: &'static str,
    pub why: &'static str,
    pub asked_at: &'static str,
    pub expires: &'static str,
    pub decided: &'static str,
    pub closed: &'static str,
    pub signature_checked: &'static str,
    pub named_by: &'static str,
    pub idn_warning: &'static str,
    pub look_alike_warning: &'static str,
    pub run_by: &'static str,
    pub privacy_policy: &'static str,
    /// How long the request's data is kept (`{retention}`).
    pub your_data: &'static str,
    pub data_kept: &'static str,
    pub why_admin: &'static str,
    pub why_deactivation: &'static str,
    pub why_user: &'static str,
    pub why_unknown: &'static str,
    pub reason_given: &'static str,
    pub approve_label: &'static str,
    pub approve_effect: &'static str,
    pub deny_label: &'static str,
    pub deny_effect: &'static str,
    pub nothing_label: &'static str,
    pub nothing_effect: &'static str,
    pub approve_button: &'static str,
    pub deny_button: &'static str,
    pub confirm_approve_title: &'static str,
    pub confirm_approve_text: &'static str,
    pub confirm_deny_title: &'static str,
    pub confirm_deny_text: &'static str,
    pub yes_approve: &'static str,
    pub yes_deny: &'static str,
    pub go_back: &'static str,
    pub sending: &'static str,
    pub approved_title: &'static str,
    pub approved_text: &'static str,
    pub denied_title: &'static str,
    pub denied_text: &'static str,
    pub expired_title: &'static str,
    pub expired_text: &'static str,
    pub cancelled_title: &'static str,
    pub cancelled_text: &'static str,
    /// A link whose request ended and whose data was deleted (`{deleted}`:
    /// when).
    pub deleted_title: &'static str,
    pub deleted_text: &'static str,
    pub decided_meanwhile: &'static str,
    pub receipt: &'static str,
    /// Beside the receipt's link: what it holds.
    pub receipt_summary: &'static str,
    pub unknown_title: &'static str,
    pub unknown_text: &'static str,
    pub network_title: &'static str,
    pub network_text: &'static str,
    pub not_sent_title: &'static str,
    pub not_sent_text: &'static str,
    pub retry: &'static str,
    pub rate_limited_title: &'static str,
    pub rate_limited_text: &'static str,
    pub error_title: &'static str,
    pub error_text: &'static str,
    pub start_again: &'static str,
    pub problem_too_many: &'static str,
    pub problem_other_site: &'static str,
    pub problem_no_decision: &'static str,
    pub problem_wrong_form: &'static str,
    pub problem_incomplete: &'static str,
    pub unavailable: &'static str,
}

pub static EN: Texts = Texts {
    loading: "Loading the request…",
    pending_title: "{server} asks to remove the link between {address} and {mxid}",
    nothing_changes: "Nothing changes unless you approve. If you do nothing, the link stays.",
    asked_by: "Asked by",
    matrix_id: "Matrix ID",
    your_address: "Your address",
    identity_server: "Identity server",
    why: "Why",
    asked_at: "Asked at",
    expires: "Expires",
    decided: "Decided",
    closed: "Closed",
    signature_checked: "signature checked on {checked} with key {key}",
    named_by: "as named by {is}",
    idn_warning: "This name contains letters outside the basic Latin alphabet. Such letters can imitate another name: compare its ASCII form, {ascii}, with the server you know.",
    look_alike_warning: "The request spelt this address {sent}, with look-alike characters that stand for others. The identity server treats both spellings as the same address, {address}, so this is the address it would unlink.",
    run_by: "run by {operator}",
    privacy_policy: "privacy policy",
    your_data: "Your data",
    data_kept: "Your address and the Matrix ID are deleted at most {retention} after this request ends; a record of the outcome without them stays.",
    why_admin: "An administrator of {server} removed the address.",
    why_deactivation: "The Matrix account is being deactivated.",
    why_user: "The account holder removed the address.",
    why_unknown: "{server} gave no reason. Usually this happens because an administrator removed the address from the account, because the account is being deactivated, or because the account holder removed it in their Matrix app.",
    reason_given: "In the server's words: {reason}",
    approve_label: "Approve:",
    approve_effect: "{is} removes the link, and people can no longer find {mxid} by your address.",
    deny_label: "Deny:",
    deny_effect: "the link stays, and the request is closed.",
    nothing_label: "Do nothing:",
    nothing_effect: "the request expires on {expires} and the link stays.",
    approve_button: "Approve…",
    deny_button: "Deny…",
    confirm_approve_title: "Approve: remove the link?",
    confirm_approve_text: "{is} will remove the link between {address} and {mxid}. People will no longer find {mxid} by your address. This cannot be undone here.",
    confirm_deny_title: "Deny: keep the link?",
    confirm_deny_text: "The link between {address} and {mxid} stays, and the request from {server} is closed.",
    yes_approve: "Yes, approve",
    yes_deny: "Yes, deny",
    go_back: "Go back without deciding",
    sending: "Recording your decision…",
    approved_title: "Approved",
    approved_text: "You approved on {at}: the link between {address} and {mxid} is to be removed.",
    denied_title: "Denied",
    denied_text: "You denied on {at}: the link between {address} and {mxid} stays.",
    expired_title: "This request has expired",
    expired_text: "Nobody decided before {expires}, so nothing was changed: the link between {address} and {mxid} stays.",
    cancelled_title: "This request was cancelled",
    cancelled_text: "An administrator withdrew it. Nothing was changed: the link between {address} and {mxid} stays.",
    deleted_title: "This request has ended",
    deleted_text: "Its data was deleted on {deleted}. Nothing more can be done with this link.",
    decided_meanwhile: "This request had already been decided, perhaps in another tab or window. That decision is the one that counts.",
    receipt: "Download the signed receipt",
    receipt_summary: "Your record of this decision: what you decided, when and how, who asked, and who is responsible for your data. Assent signs it, so anyone can check that it is unchanged.",
    unknown_title: "This link is not known",
    unknown_text: "Check that the whole link from the email was copied. Nothing has been changed.",
    network_title: "The server could not be reached",
    network_text: "Check your connection and try again. Nothing has been changed.",
    not_sent_title: "Your decision was not recorded",
    not_sent_text: "The server could not be reached. Check your connection and send it again.",
    retry: "Try again",
    rate_limited_title: "Too many attempts",
    rate_limited_text: "Wait a minute, then try again.",
    error_title: "Something went wrong",
    error_text: "The server could not answer. Try again in a moment.",
    start_again: "Start again",
    problem_too_many: "Too many attempts from here; wait a minute and try again.",
    problem_other_site: "The form was sent from another site.",
    problem_no_decision: "The form did not say approve or deny.",
    problem_wrong_form: "The form was not the one this page gave you.",
    problem_incomplete: "The form was incomplete.",
    unavailable: "This page cannot be shown right now.",
};

pub static DE: Texts = Texts {
    loading: "Die Anfrage wird geladen…",
    pending_title: "{server} bittet darum, die Verknüpfung zwischen {address} und {mxid} zu entfernen",
    nothing_changes: "Nichts ändert sich, solange Sie nicht zustimmen. Wenn Sie nichts tun, bleibt die Verknüpfung bestehen.",
    asked_by: "Angefragt von",
    matrix_id: "Matrix-ID",
    your_address: "Ihre Adresse",
    identity_server: "Identitätsserver",
    why: "Grund",
    asked_at: "Angefragt am",
    expires: "Läuft ab",
    decided: "Entschieden",
    closed: "Geschlossen",
    signature_checked: "Signatur geprüft am {checked} mit Schlüssel {key}",
    named_by: "so benannt von {is}",
    idn_warning: "Dieser Name enthält Buchstaben außerhalb des lateinischen Grundalphabets. Solche Buchstaben können einen anderen Namen nachahmen: Vergleichen Sie die ASCII-Form, {ascii}, mit dem Server, den Sie kennen.",
    look_alike_warning: "Die Anfrage schrieb diese Adresse als {sent}, mit ähnlich aussehenden Zeichen, die für andere stehen. Der Identitätsserver behandelt beide Schreibweisen als dieselbe Adresse, {address}: Diese Adresse würde er trennen.",
    run_by: "betrieben von {operator}",
    privacy_policy: "Datenschutzerklärung",
    your_data: "Ihre Daten",
    data_kept: "Ihre Adresse und die Matrix-ID werden spätestens {retention} nach dem Ende dieser Anfrage gelöscht; ein Vermerk über das Ergebnis ohne sie bleibt.",
    why_admin: "Eine Administratorin oder ein Administrator von {server} hat die Adresse entfernt.",
    why_deactivation: "Das Matrix-Konto wird deaktiviert.",
    why_user: "Die Kontoinhaberin oder der Kontoinhaber hat die Adresse entfernt.",
    why_unknown: "{server} hat keinen Grund genannt. Meist geschieht dies, weil die Administration die Adresse aus dem Konto entfernt hat, weil das Konto deaktiviert wird oder weil die Person, der das Konto gehört, sie in ihrer Matrix-App entfernt hat.",
    reason_given: "In den Worten des Servers: {reason}",
    approve_label: "Zustimmen:",
    approve_effect: "{is} entfernt die Verknüpfung, und niemand findet {mxid} mehr über Ihre Adresse.",
    deny_label: "Ablehnen:",
    deny_effect: "Die Verknüpfung bleibt bestehen, und die Anfrage wird geschlossen.",
    nothing_label: "Nichts tun:",
    nothing_effect: "Die Anfrage läuft am {expires} ab, und die Verknüpfung bleibt bestehen.",
    approve_button: "Zustimmen…",
    deny_button: "Ablehnen…",
    confirm_approve_title: "Zustimmen: Verknüpfung entfernen?",
    confirm_approve_text: "{is} wird die Verknüpfung zwischen {address} und {mxid} entfernen. Danach findet niemand {mxid} mehr über Ihre Adresse. Dies kann hier nicht rückgängig gemacht werden.",
    confirm_deny_title: "Ablehnen: Verknüpfung behalten?",
    confirm_deny_text: "Die Verknüpfung zwischen {address} und {mxid} bleibt bestehen, und die Anfrage von {server} wird geschlossen.",
    yes_approve: "Ja, zustimmen",
    yes_deny: "Ja, ablehnen",
    go_back: "Zurück, ohne zu entscheiden",
    sending: "Ihre Entscheidung wird gespeichert…",
    approved_title: "Zugestimmt",
    approved_text: "Sie haben am {at} zugestimmt: Die Verknüpfung zwischen {address} und {mxid} wird entfernt.",
    denied_title: "Abgelehnt",
    denied_text: "Sie haben am {at} abgelehnt: Die Verknüpfung zwischen {address} und {mxid} bleibt bestehen.",
    expired_title: "Diese Anfrage ist abgelaufen",
    expired_text: "Bis {expires} hat niemand entschieden, daher wurde nichts geändert: Die Verknüpfung zwischen {address} und {mxid} bleibt bestehen.",
    cancelled_title: "Diese Anfrage wurde zurückgezogen",
    cancelled_text: "Die Administration hat sie zurückgezogen. Nichts wurde geändert: Die Verknüpfung zwischen {address} und {mxid} bleibt bestehen.",
    deleted_title: "Diese Anfrage ist beendet",
    deleted_text: "Ihre Daten wurden am {deleted} gelöscht. Mit diesem Link lässt sich nichts mehr tun.",
    decided_meanwhile: "Über diese Anfrage wurde bereits entschieden, vielleicht in einem anderen Tab oder Fenster. Diese Entscheidung gilt.",
    receipt: "Signierte Quittung herunterladen",
    receipt_summary: "Ihr Nachweis dieser Entscheidung: was Sie entschieden haben, wann und wie, wer gefragt hat und wer für Ihre Daten verantwortlich ist. Assent signiert ihn, damit jeder prüfen kann, dass er unverändert ist.",
    unknown_title: "Dieser Link ist unbekannt",
    unknown_text: "Prüfen Sie, ob der ganze Link aus der E-Mail kopiert wurde. Nichts wurde geändert.",
    network_title: "Der Server ist nicht erreichbar",
    network_text: "Prüfen Sie Ihre Verbindung und versuchen Sie es erneut. Nichts wurde geändert.",
    not_sent_title: "Ihre Entscheidung wurde nicht gespeichert",
    not_sent_text: "Der Server ist nicht erreichbar. Prüfen Sie Ihre Verbindung und senden Sie sie erneut.",
    retry: "Erneut versuchen",
    rate_limited_title: "Zu viele Versuche",
    rate_limited_text: "Warten Sie eine Minute und versuchen Sie es dann erneut.",
    error_title: "Etwas ist schiefgegangen",
    error_text: "Der Server konnte nicht antworten. Versuchen Sie es gleich noch einmal.",
    start_again: "Von vorn beginnen",
    problem_too_many: "Zu viele Versuche von hier; warten Sie eine Minute und versuchen Sie es erneut.",
    problem_other_site: "Das Formular wurde von einer anderen Website gesendet.",
    problem_no_decision: "Das Formular enthielt weder Zustimmen noch Ablehnen.",
    problem_wrong_form: "Das Formular stammt nicht von dieser Seite.",
    problem_incomplete: "Das Formular war unvollständig.",
    unavailable: "Diese Seite kann gerade nicht angezeigt werden.",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_filled_and_unknown_ones_kept() {
        assert_eq!(
            fill(
                "{server} asks {mxid} {odd} {",
                &[("server", "hs"), ("mxid", "@a:hs")]
            ),
            "hs asks @a:hs {odd} {"
        );
        // A value that looks like a hole is not filled again.
        assert_eq!(fill("{a}{b}", &[("a", "{b}"), ("b", "x")]), "{b}x");
    }

    #[test]
    fn the_reader_s_preferences_choose_the_language() {
        assert_eq!(Lang::negotiate(["fr-FR", "de-AT", "en"]), Lang::De);
        assert_eq!(Lang::negotiate(["fr"]), Lang::En);
        assert_eq!(
            Lang::from_accept_language("de-DE,de;q=0.9,en;q=0.8"),
            Lang::De
        );
        assert_eq!(Lang::from_accept_language("en;q=0.5, de;q=0.8"), Lang::De);
        assert_eq!(Lang::from_accept_language("de;q=0, fr"), Lang::En);
        assert_eq!(Lang::from_accept_language("garbage;;q=x,,"), Lang::En);
        assert_eq!(Lang::from_accept_language(""), Lang::En);
    }

    /// Every text has the same holes in every language, so no translation
    /// loses a fact (or shows an unfilled `{hole}`).
    #[test]
    fn every_language_has_the_same_holes() {
        fn holes(text: &str) -> Vec<&str> {
            let mut found: Vec<&str> = text
                .split('{')
                .skip(1)
                .filter_map(|s| s.split('}').next())
                .collect();
            found.sort_unstable();
            found
        }
        let pairs = |t: &'static Texts| -> Vec<&'static str> {
            vec![
                t.pending_title,
                t.signature_checked,
                t.named_by,
                t.idn_warning,
                t.look_alike_warning,
                t.run_by,
                t.why_admin,
                t.why_unknown,
                t.reason_given,
                t.approve_effect,
                t.nothing_effect,
                t.confirm_approve_text,
                t.confirm_deny_text,
                t.approved_text,
                t.denied_text,
                t.expired_text,
                t.cancelled_text,
            ]
        };
        for (en, de) in pairs(&EN).into_iter().zip(pairs(&DE)) {
            assert_eq!(holes(en), holes(de), "{en:?} / {de:?}");
        }
    }
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn retention_periods_read_as_people_say_them() {
        const MINUTE: i64 = 60_000;
        let cases = [
            (90 * 24 * 60 * MINUTE, "90 days", "90 Tage"),
            (24 * 60 * MINUTE, "1 day", "1 Tag"),
            (36 * 60 * MINUTE, "36 hours", "36 Stunden"),
            (60 * MINUTE, "1 hour", "1 Stunde"),
            (MINUTE, "1 minute", "1 Minute"),
            (90 * MINUTE, "90 minutes", "90 Minuten"),
            (0, "1 minute", "1 Minute"),
        ];
        for (ms, en, de) in cases {
            assert_eq!(duration_words(ms, Lang::En), en);
            assert_eq!(duration_words(ms, Lang::De), de);
        }
    }
}
