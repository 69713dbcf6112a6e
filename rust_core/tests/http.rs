//! The HTTP request parser: framing, pipelining, limits and the smuggling cases, fed whole and byte
//! by byte.

use rust_core::http::{Event, RequestParser};

const LIMIT: usize = 1024;

/// An event, with (method, target, body) for a request.
type Seen = (Event, Option<(String, String, String)>);

/// Every event of `input` fed in chunks of `chunk` bytes, with each request as (method, target, body).
fn events(input: &[u8], chunk: usize) -> Vec<Seen> {
    let mut parser = RequestParser::new(LIMIT, LIMIT);
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        parser.feed(piece);
        loop {
            let event = parser.next_event();
            match event {
                Event::NeedMore => break,
                Event::Request => {
                    let r = parser.request();
                    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    out.push((event, Some((text(&r.method), text(&r.target), text(&r.body)))));
                }
                Event::Error(..) => {
                    out.push((event, None));
                    return out;
                }
                Event::Continue => out.push((event, None)),
            }
        }
    }
    out
}

/// The same events whatever the chunking.
fn parse(input: &[u8]) -> Vec<Seen> {
    let whole = events(input, input.len());
    for chunk in [1, 2, 3, 7] {
        assert_eq!(events(input, chunk), whole, "chunks of {chunk}");
    }
    whole
}

fn request(method: &str, target: &str, body: &str) -> Seen {
    (Event::Request, Some((method.into(), target.into(), body.into())))
}

fn status(input: &[u8]) -> u16 {
    match parse(input).pop() {
        Some((Event::Error(status, _), _)) => status,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn content_length_body() {
    let input = b"POST /app/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{\"input\":[1]}";
    assert_eq!(parse(input), vec![request("POST", "/app/predict", "{\"input\":[1]}")]);
}

#[test]
fn pipelined_requests_come_out_in_order() {
    let input = b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /c?q=1 HTTP/1.1\r\n\r\n";
    assert_eq!(parse(input), vec![request("GET", "/a", ""), request("POST", "/b", "hi"), request("GET", "/c?q=1", "")]);
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let input = b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\nGET /n HTTP/1.1\r\n\r\n";
    assert_eq!(parse(input), vec![request("POST", "/p", "Wikipedia"), request("GET", "/n", "")]);
}

#[test]
fn bare_line_feeds_are_accepted() {
    let input = b"POST /p HTTP/1.1\nContent-Length: 1\n\nx";
    assert_eq!(parse(input), vec![request("POST", "/p", "x")]);
}

#[test]
fn keep_alive_follows_the_version_and_connection_header() {
    let cases: [(&[u8], bool); 5] = [
        (b"GET / HTTP/1.1\r\n\r\n", true),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n", false),
    ];
    for (input, keep_alive) in cases {
        let mut parser = RequestParser::new(LIMIT, LIMIT);
        parser.feed(input);
        assert_eq!(parser.next_event(), Event::Request);
        assert_eq!(parser.request().keep_alive, keep_alive, "{}", String::from_utf8_lossy(input));
    }
}

#[test]
fn headers_the_server_reads_are_kept_case_insensitively() {
    let mut parser = RequestParser::new(LIMIT, LIMIT);
    parser.feed(b"GET /metrics HTTP/1.1\r\nAUTHORIZATION: Bearer t\r\naccept:  text/plain \r\nX-Request-ID: abc\r\n\r\n");
    assert_eq!(parser.next_event(), Event::Request);
    let r = parser.request();
    assert_eq!(r.authorization.as_deref(), Some(&b"Bearer t"[..]));
    assert_eq!(r.accept.as_deref(), Some(&b"text/plain"[..]));
    assert_eq!(r.request_id.as_deref(), Some(&b"abc"[..]));
    parser.feed(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(parser.next_event(), Event::Request);
    assert_eq!(parser.request().authorization, None, "headers do not leak into the next request");
}

#[test]
fn expect_continue_comes_before_the_body() {
    let input = b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok";
    assert_eq!(parse(input), vec![(Event::Continue, None), request("POST", "/p", "ok")]);
    let http10 = b"POST /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok";
    assert_eq!(parse(http10), vec![request("POST", "/p", "ok")]);
}

#[test]
fn smuggling_shapes_are_rejected() {
    assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400);
    assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"), 400);
    assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\na"), 400);
    assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\na"), 400);
    assert_eq!(status(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 400);
    assert_eq!(status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), 400);
    assert_eq!(status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXX"), 400);
    // Repeated equal Content-Lengths are one length.
    let same = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na";
    assert_eq!(parse(same), vec![request("POST", "/", "a")]);
}

#[test]
fn malformed_heads_and_upgrades_are_rejected() {
    assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 400);
    assert_eq!(status(b"G@T / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), 400);
    assert_eq!(status(b"CONNECT host:443 HTTP/1.1\r\n\r\n"), 400);
}

#[test]
fn heads_over_the_limit_get_431_complete_or_not() {
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(LIMIT));
    assert_eq!(status(long.as_bytes()), 431);
    let unfinished = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(LIMIT));
    assert_eq!(status(unfinished.as_bytes()), 431);
    let many: String = (0..120).map(|i| format!("H{i}: v\r\n")).collect();
    let mut parser = RequestParser::new(1 << 20, LIMIT);
    parser.feed(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
    assert!(matches!(parser.next_event(), Event::Error(431, _)));
}

#[test]
fn bodies_over_the_limit_are_read_and_dropped() {
    let big = "x".repeat(LIMIT + 1);
    for input in [
        format!("POST /p HTTP/1.1\r\nContent-Length: {}\r\n\r\n{big}GET /n HTTP/1.1\r\n\r\n", big.len()),
        format!("POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\nGET /n HTTP/1.1\r\n\r\n", big.len()),
    ] {
        let mut parser = RequestParser::new(LIMIT, LIMIT);
        parser.feed(input.as_bytes());
        assert_eq!(parser.next_event(), Event::Request);
        assert!(parser.request().too_large && parser.request().body.is_empty());
        assert_eq!(parser.next_event(), Event::Request, "the connection goes on after the dropped body");
        assert_eq!(parser.request().target, b"/n");
        assert!(!parser.request().too_large);
    }
}

#[test]
fn a_failed_parser_stays_failed() {
    let mut parser = RequestParser::new(LIMIT, LIMIT);
    parser.feed(b"NOT HTTP\r\n\r\n");
    assert!(matches!(parser.next_event(), Event::Error(400, _)));
    parser.feed(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(parser.next_event(), Event::NeedMore);
}

#[test]
fn empty_lines_between_requests_are_skipped() {
    let input = b"POST /p HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\n\r\nGET /n HTTP/1.1\r\n\r\n";
    assert_eq!(parse(input), vec![request("POST", "/p", "x"), request("GET", "/n", "")]);
}

#[test]
fn what_is_not_http_is_rejected_before_a_head_ends() {
    let tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    assert_eq!(status(tls_hello), 400);
    assert_eq!(parse(b"POST /p HTTP/1.1\r\nContent-Le"), vec![], "a valid partial head waits");
}

#[test]
fn chunk_lines_and_trailers_have_the_same_limits_whole_or_in_pieces() {
    let long_extension = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;x={}\r\na\r\n0\r\n\r\n", "e".repeat(2000));
    assert_eq!(status(long_extension.as_bytes()), 400);
    let long_trailers = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: {}\r\n\r\n", "t".repeat(LIMIT));
    assert_eq!(status(long_trailers.as_bytes()), 431);
}
