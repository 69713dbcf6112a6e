//! The router when the process has no file descriptor left: a test binary of its own, since the limit
//! it lowers is the whole process's.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use rust_core::router::Router;

fn set_descriptor_limit(soft: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointers to rlimit structs.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = soft.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// Takes every descriptor left under the limit; they close when dropped.
fn take_all_descriptors() -> Vec<std::os::fd::OwnedFd> {
    std::iter::from_fn(|| std::fs::File::open("/dev/null").ok().map(Into::into)).collect()
}

/// Runs the router as the engine thread does (poll until the next keep-alive, then keep-alive) for
/// `how_long`; returns how many times round.
fn run(router: &mut Router, how_long: Duration) -> u32 {
    let (start, mut rounds) = (Instant::now(), 0);
    while start.elapsed() < how_long {
        let due = router.keep_alive(Instant::now()).min(start + how_long);
        router.poll(due.saturating_duration_since(Instant::now()));
        while router.recv().is_some() {}
        rounds += 1;
    }
    rounds
}

#[test]
fn out_of_descriptors_the_router_stops_accepting_for_a_while_instead_of_spinning_then_accepts() {
    let mut router = Router::bind("tcp://127.0.0.1:0", Duration::ZERO, Duration::ZERO).unwrap();
    let address = router.endpoint().unwrap().trim_start_matches("tcp://").to_string();
    // Connections the kernel completes in the listen backlog; accepting each takes a descriptor.
    let clients: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(&address).unwrap()).collect();
    set_descriptor_limit(1024);
    let taken = take_all_descriptors();
    // A listener left readable with accept failing made every poll return at once: hundreds of
    // thousands of rounds in 300 ms. Paused for 100 ms after each failure, a few.
    let rounds = run(&mut router, Duration::from_millis(300));
    assert!(rounds < 50, "{rounds} rounds of the router in 300 ms without a descriptor left");
    assert_eq!(router.connections(), 0);
    drop(taken);
    run(&mut router, Duration::from_millis(300));
    assert_eq!(router.connections(), clients.len(), "the waiting connections are accepted once descriptors are back");
}
