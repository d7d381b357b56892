use super::*;
use crate::storage::{Source, StoredRequest};
use assent_shared::{Initiator, Medium, RequestStatus};

fn sample(initiator: Initiator, reason: Option<&str>) -> StoredRequest {
    StoredRequest {
        id: "req_0123456789ab0123456789abcdef".to_owned(),
        source: Source::Gateway,
        identity_server: "matrix.example.org".to_owned(),
        origin: "xn--bcher-kva.example:8448".to_owned(),
        origin_key_id: Some("ed25519:a_AbCd".to_owned()),
        verified_at: Some(1_790_000_000_000),
        mxid: "@jürgen:xn--bcher-kva.example".to_owned(),
        medium: Medium::Email,
        address: "jürgen.müller@example.org".to_owned(),
        address_as_sent: None,
        initiator,
        reason: reason.map(str::to_owned),
        callback_url: None,
        status: RequestStatus::Pending,
        token_hash: vec![0; 32],
        created_at: 1_790_000_000_000,
        expires_at: 1_790_604_800_000,
        decided_at: None,
        decision_id: None,
        decision_doc: None,
        raw: None,
        updated_at: 1_790_000_000_000,
        repeats: 0,
        purged_at: None,
        purged_by: None,
        decision_sha256: None,
    }
}

fn is_config() -> IdentityServerConfig {
    let mut config = Config::default();
    crate::demo::prepare_config(&mut config);
    let mut is = config.identity_servers[0].clone();
    is.display_name = "Beispiel <Identitätsserver> & Co".to_owned();
    is
}

const LINK: &str =
    "https://consent.example.org/consent/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Every language renders every part with every fact the owner needs, and
/// each language is its own text (a template copied without translating
/// fails here).
#[test]
fn every_template_in_every_language_says_everything() {
    assert!(
        languages_match_config(),
        "config languages and templates differ"
    );
    let is = is_config();
    let mut seen_texts = Vec::new();
    for language in Language::ALL {
        for (initiator, reason) in [
            (Initiator::Unknown, None),
            (Initiator::Admin, None),
            (Initiator::Deactivation, None),
            (Initiator::User, None),
            (Initiator::Admin, Some("Spam-Konto <geschlossen>")),
        ] {
            let request = sample(initiator, reason);
            let letter = Letter::new(&request, Some(&is), LINK.to_owned());
            let (text, html) = letter.render(language).unwrap();
            let subject = letter.subject(language);
            assert!(subject.contains("bücher.example") && subject.contains("@jürgen"));
            for fact in [
                "bücher.example:8448",
                "xn--bcher-kva.example:8448",
                "ed25519:a_AbCd",
                "@jürgen:xn--bcher-kva.example",
                "jürgen.müller@example.org",
                "matrix.example.org",
                "Example Ltd",
                "2026-09-21 14:13 UTC",
                "2026-09-28 14:13 UTC",
                LINK,
                "https://example.org/privacy",
            ] {
                assert!(
                    text.contains(fact),
                    "{language:?} text lacks {fact}:\n{text}"
                );
                assert!(
                    html.contains(fact),
                    "{language:?} html lacks {fact}:\n{html}"
                );
            }
            assert!(text.contains("Beispiel <Identitätsserver> & Co"));
            assert!(
                html.contains("Beispiel &#60;Identitätsserver&#62; &#38; Co"),
                "{html}"
            );
            if let Some(reason) = reason {
                assert!(text.contains(reason));
                assert!(!html.contains(reason), "the reason is escaped in HTML");
            }
            // No remote content: the only URLs are the link and the policy.
            for banned in ["<img", "<link", "<script", "src=", "url(", "@import"] {
                assert!(!html.contains(banned), "{language:?} html has {banned}");
            }
            let urls = html.matches("href=").count();
            assert_eq!(urls, 2, "{language:?}: the button and the privacy policy");
            assert!(!text.contains("{{") && !html.contains("{%"));
            seen_texts.push((language, initiator, text));
        }
    }
    // The same case in two languages must differ in every line that carries
    // words, not just somewhere.
    let en = &seen_texts[0].2;
    let de = &seen_texts[5].2;
    for line in en.lines().filter(|l| l.split_whitespace().count() > 4) {
        assert!(!de.contains(line), "untranslated line in German: {line}");
    }
    // Each initiator has its own explanation.
    for language in Language::ALL {
        let whys: std::collections::HashSet<_> = seen_texts
            .iter()
            .filter(|(l, _, _)| *l == language)
            .map(|(_, _, t)| t.clone())
            .collect();
        assert_eq!(whys.len(), 5, "{language:?}");
    }
}

#[test]
fn the_subject_names_an_internationalised_server_in_ascii_too() {
    let is = is_config();
    let letter = Letter::new(
        &sample(Initiator::Unknown, None),
        Some(&is),
        LINK.to_owned(),
    );
    for language in Language::ALL {
        let subject = letter.subject(language);
        assert!(
            subject.starts_with("bücher.example:8448 (xn--bcher-kva.example:8448) "),
            "{subject}"
        );
    }
    let mut plain = sample(Initiator::Unknown, None);
    plain.origin = "hs.example.org".to_owned();
    let subject = Letter::new(&plain, Some(&is), LINK.to_owned()).subject(Language::En);
    assert!(subject.starts_with("hs.example.org asks"), "{subject}");
}

#[test]
fn an_address_spelt_with_look_alikes_is_shown_in_both_spellings() {
    let is = is_config();
    let mut request = sample(Initiator::Unknown, None);
    request.address = "bob.smith@example.org".to_owned();
    request.address_as_sent = Some("bob.\u{17F}mith@example.org".to_owned());
    let letter = Letter::new(&request, Some(&is), LINK.to_owned());
    for (language, words) in [(Language::En, "look-alike"), (Language::De, "ähnlich")] {
        let (text, html) = letter.render(language).unwrap();
        for part in [&text, &html] {
            assert!(part.contains("bob.smith@example.org"), "{part}");
            assert!(part.contains("bob.\u{17F}mith@example.org"), "{part}");
            assert!(part.contains(words), "{language:?}: {part}");
        }
    }
    request.address_as_sent = None;
    let (text, html) = Letter::new(&request, Some(&is), LINK.to_owned())
        .render(Language::En)
        .unwrap();
    assert!(!text.contains("look-alike") && !html.contains("look-alike"));
}

#[test]
fn the_message_is_multipart_with_the_headers_mail_systems_need() {
    let mut config = Config::default();
    config.email.from = "Identitätsserver Beispiel <noreply@example.org>".to_owned();
    let is = is_config();
    let letter = Letter::new(
        &sample(Initiator::Unknown, None),
        Some(&is),
        LINK.to_owned(),
    );
    let id = message_id("email:req_x:initial", &config.email.from.parse().unwrap());
    assert_eq!(id, "<email.req_x.initial@example.org>");
    let message = compose(&config, &letter, Language::De, id, 1_790_000_000_000).unwrap();
    let raw = String::from_utf8(message.formatted()).unwrap();
    for header in [
        "Auto-Submitted: auto-generated",
        "Message-ID: <email.req_x.initial@example.org>",
        "Date: Mon, 21 Sep 2026 14:13:20 +0000",
        "Content-Type: multipart/alternative",
        "Content-Language: de",
        // Non-ASCII names are encoded words, never raw 8-bit headers.
        "From: =?utf-8?",
    ] {
        assert!(raw.contains(header), "missing {header}:\n{raw}");
    }
    assert!(raw.contains("Content-Type: text/plain; charset=utf-8"));
    assert!(raw.contains("Content-Type: text/html; charset=utf-8"));
    assert!(!raw.to_lowercase().contains("list-id"));
    let head = raw.split("\r\n\r\n").next().unwrap();
    // Headers are 7-bit, except an internationalised address itself
    // (RFC 6531: it has no encoded form).
    for line in head.lines().filter(|l| !l.starts_with("To: ")) {
        assert!(line.is_ascii(), "not 7-bit: {line}");
    }
}

#[test]
fn addresses_and_links_are_taken_out_of_errors() {
    let secrets = ["bob@example.org".to_owned(), LINK.to_owned()];
    assert_eq!(
        redact("550 5.1.1 <Bob@Example.org>: no such user", &secrets),
        "550 5.1.1 <<redacted>>: no such user"
    );
    assert_eq!(
        redact(&format!("554 URL {LINK} listed"), &secrets),
        "554 URL <redacted> listed"
    );
    assert_eq!(redact("451 later", &secrets), "451 later");
    // Letters whose lowercase has another length neither panic nor hide
    // the address.
    for text in ["İẞ bob@example.org ẞİ", "ẞbob@EXAMPLE.orgİ"] {
        let out = redact(text, &secrets);
        assert!(!out.to_lowercase().contains("bob@example.org"), "{out}");
    }
}

#[test]
fn unknown_languages_fall_back_to_english() {
    assert_eq!(Language::from_code("fr"), Language::En);
    assert_eq!(Language::from_code("de"), Language::De);
}

#[test]
fn a_server_assent_did_not_verify_is_not_called_proven() {
    let mut request = sample(Initiator::Deactivation, None);
    request.verified_at = None;
    request.origin_key_id = None;
    let letter = Letter::new(&request, Some(&is_config()), LINK.to_owned());
    for language in Language::ALL {
        let (text, html) = letter.render(language).unwrap();
        for part in [&text, &html] {
            assert!(
                !part.contains("signature") && !part.contains("Signatur"),
                "{part}"
            );
        }
        assert!(text.contains("Beispiel <Identitätsserver> & Co"));
    }
}

/// The email says how long the request's data is kept, in both languages
/// and both parts, and where the privacy policy is.
#[test]
fn the_email_states_how_long_the_data_is_kept() {
    let is = is_config();
    let letter = Letter::new(
        &sample(Initiator::Unknown, None),
        Some(&is),
        LINK.to_owned(),
    )
    .kept_for(std::time::Duration::from_secs(90 * 24 * 3600));
    for (language, words) in [
        (
            Language::En,
            "are deleted at most 90 days after this request ends",
        ),
        (
            Language::De,
            "spätestens 90 Tage nach dem Ende dieser Anfrage gelöscht",
        ),
    ] {
        let (text, html) = letter.render(language).unwrap();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for part in [&text, &html] {
            assert!(part.contains(words), "{language:?}: {part}");
        }
    }
}
