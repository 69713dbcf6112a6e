//! A Linux epoll set, level-triggered: what the router polls its connections with, and what the
//! engine thread sleeps on (its wake-up and timer descriptors, and the router's set itself while
//! the thread reads the answers; see `engine`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub struct Epoll(OwnedFd);

/// One event as `epoll_wait` reports it: the token given at `add`, and the readiness flags.
pub type Event = libc::epoll_event;

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 returns a new descriptor that nothing else owns, or -1 (checked).
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The set's own descriptor: readable while any member is ready (so a set can be a member of another).
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Watches `fd` for `events` (`EPOLLIN`, `EPOLLOUT`), reported under `token`.
    pub fn add(&self, fd: RawFd, token: u64, events: libc::c_int) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    /// Changes what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, token: u64, events: libc::c_int) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    /// Stops watching `fd` (closing it does too).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    fn control(&self, op: libc::c_int, fd: RawFd, token: u64, events: libc::c_int) -> io::Result<()> {
        let mut event = libc::epoll_event { events: events as u32, u64: token };
        // SAFETY: a valid epoll descriptor and event; the kernel copies the event.
        cvt(unsafe { libc::epoll_ctl(self.fd(), op, fd, &mut event) }).map(drop)
    }

    /// Waits up to `timeout` for members to be ready; the events found, in `events`.
    pub fn poll<'a>(&self, events: &'a mut [Event], timeout: Duration) -> &'a [Event] {
        let capacity = events.len().min(i32::MAX as usize) as libc::c_int;
        // SAFETY: a valid epoll descriptor and a buffer of `capacity` events.
        let n = unsafe { libc::epoll_wait(self.fd(), events.as_mut_ptr(), capacity, millis(timeout)) };
        &events[..n.max(0) as usize]
    }
}

/// An empty event buffer for [`Epoll::poll`].
pub const NO_EVENT: Event = libc::epoll_event { events: 0, u64: 0 };

/// Sleeps until the set `epoll` (an [`Epoll::fd`]) has a member ready or `timeout` passes, without
/// taking the events: they are level-triggered, so the next poll finds them. For a thread that
/// sleeps without holding the set's owner.
pub fn wait(epoll: RawFd, timeout: Duration) {
    let mut event = NO_EVENT;
    // SAFETY: a buffer of one event; a stale descriptor only makes epoll_wait fail.
    unsafe { libc::epoll_wait(epoll, &mut event, 1, millis(timeout)) };
}

/// An epoll timeout: whole milliseconds, rounded up so that a wait never ends before `timeout`.
fn millis(timeout: Duration) -> libc::c_int {
    timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
}

fn cvt(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}
