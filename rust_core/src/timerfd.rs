//! A non-blocking Linux timerfd: lets another thread bring a poll loop's wake-up forward without
//! waking it now (one system call, against a wake-up of a sleeping thread).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

pub struct TimerFd(OwnedFd);

impl TimerFd {
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY: timerfd_create has no memory-safety preconditions; a negative result is an error.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(TimerFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Makes the descriptor readable at `at` (at once if it has passed).
    pub fn set(&self, at: Instant) {
        // A zero time would disarm the timer: one nanosecond is "now".
        self.arm(at.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1)));
    }

    /// Disarms the timer and makes the descriptor unreadable again, fired or not.
    pub fn clear(&self) {
        self.arm(Duration::ZERO);
    }

    fn arm(&self, after: Duration) {
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let value = libc::timespec { tv_sec: after.as_secs() as libc::time_t, tv_nsec: after.subsec_nanos() as libc::c_long };
        let spec = libc::itimerspec { it_interval: zero, it_value: value };
        // SAFETY: a valid timerfd and itimerspec; the old value is not asked for (null). Setting the
        // timer also resets its count of expirations, which is what makes it unreadable.
        unsafe { libc::timerfd_settime(self.fd(), 0, &spec, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(timer: &TimerFd) -> bool {
        let mut poll = libc::pollfd { fd: timer.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut poll, 1, 0) == 1 }
    }

    #[test]
    fn fires_at_the_time_set_and_clear_makes_it_unreadable() {
        let timer = TimerFd::new().unwrap();
        assert!(!readable(&timer));
        timer.set(Instant::now() + Duration::from_millis(30));
        assert!(!readable(&timer));
        std::thread::sleep(Duration::from_millis(40));
        assert!(readable(&timer));
        timer.clear();
        assert!(!readable(&timer));
        timer.set(Instant::now() - Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(1));
        assert!(readable(&timer), "a time past fires at once");
        timer.set(Instant::now() + Duration::from_secs(10));
        assert!(!readable(&timer), "setting again forgets the expiration");
    }
}
