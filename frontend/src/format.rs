//! Dates and times in the page's language and the reader's time zone.

use assent_shared::i18n::Lang;
use wasm_bindgen::JsValue;

/// A point in time (ms since the Unix epoch) as `lang` writes it, with the
/// time zone named.
pub fn date_time(ms: i64, lang: Lang) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(ms as f64));
    let options = js_sys::Object::new();
    // (`dateStyle`/`timeStyle` cannot be combined with `timeZoneName`.)
    for (key, value) in [
        ("year", "numeric"),
        ("month", "long"),
        ("day", "numeric"),
        ("hour", "2-digit"),
        ("minute", "2-digit"),
        ("timeZoneName", "short"),
    ] {
        let _ = js_sys::Reflect::set(&options, &key.into(), &value.into());
    }
    date.to_locale_string(lang.code(), &options).into()
}
