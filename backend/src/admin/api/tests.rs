use super::*;
use axum::http::StatusCode;

#[test]
fn cursors_round_trip_and_garbage_is_refused() {
    let text = encode_cursor(1_700_000_000_000, "req_0190_abc");
    assert_eq!(
        decode_cursor(&text),
        Some(ListCursor {
            created_at: 1_700_000_000_000,
            id: "req_0190_abc".to_owned()
        })
    );
    assert_eq!(decode_cursor("not a cursor"), None);
    assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("x:req")), None);
}

#[test]
fn a_search_matches_localparts_and_any_case() {
    assert_eq!(search_prefixes(" Alice "), ["Alice", "alice", "@alice"]);
    assert_eq!(search_prefixes("@bob:hs"), ["@bob:hs"]);
    assert_eq!(search_prefixes("hs.example"), ["hs.example", "@hs.example"]);
    // Addresses are stored case-folded: the folded form is searched too.
    assert_eq!(
        search_prefixes("Stra\u{DF}e@"),
        ["Stra\u{DF}e@", "stra\u{DF}e@", "strasse@", "@stra\u{DF}e@"]
    );
}

#[test]
fn list_parameters_are_checked() {
    assert!(parse_list(None).is_ok());
    let (filter, from, limit) = parse_list(Some(
        "status=pending&q=alice&requesting_server=HS.test&limit=10",
    ))
    .unwrap();
    assert_eq!(filter.status, Some(RequestStatus::Pending));
    assert_eq!(filter.origin.as_deref(), Some("hs.test"));
    assert_eq!((from, limit), (None, 10));
    for bad in [
        "status=maybe",
        "limit=0",
        "limit=201",
        "limit=x",
        "from=%%%",
        "colour=red",
        "created_from=5&created_before=5",
    ] {
        let error = parse_list(Some(bad)).unwrap_err();
        assert_eq!(
            (error.status, error.errcode),
            (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            "{bad}"
        );
    }
}
