//! Fuzzes what a homeserver controls in an unbind: the `Authorization`
//! header and the body. Input: the header value, a newline, the body.
//! Nothing here may panic, and a body that parses must name a valid Matrix
//! ID on the server it names.

#![no_main]

use assent_backend::intake::{body, xmatrix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (header, content) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let parsed_body = body::parse(content);
    let header = std::str::from_utf8(header).ok();
    if let Ok(parsed) = xmatrix::parse_header(header) {
        // Building and checking the signed object must fail cleanly, never panic.
        let _ = xmatrix::signed_object(
            "POST",
            "/_matrix/identity/v2/3pid/unbind",
            parsed.origin.as_str(),
            "is.example.org",
            content,
        );
        let _ = xmatrix::verify(
            &parsed,
            &[0u8; 32],
            "POST",
            "/_matrix/identity/v2/3pid/unbind",
            "is.example.org",
            content,
        );
    }
    if let Ok(unbind) = parsed_body {
        // A body that parsed names a valid Matrix ID on the server it names.
        assert!(unbind.mxid.ends_with(&format!(":{}", unbind.mxid_server)));
        assert!(unbind.threepid.address.len() <= 254);
    }
});
