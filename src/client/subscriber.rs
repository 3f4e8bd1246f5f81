//! A consumer that stays subscribed: it reconnects with backoff and jitter,
//! resumes every room from the last seq it delivered, and yields each event
//! once, in order, as `client.js` does in a browser.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Client, ClientError, Closed, Next, Resume};

/// Backoff before the first reconnect; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A connection that lasted this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Silence allowed before the hub has told its heartbeat timeout.
const FIRST_SILENCE: Duration = Duration::from_secs(90);

/// What a [`Subscriber`] reports, in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Update {
    /// Connected and welcomed (`attempt` counts from 1).
    Connected {
        /// Which connection attempt this was.
        attempt: u64,
    },
    /// The `subscribed` reply, with `positions` and `recovered`.
    Subscribed(Value),
    /// An event not delivered before.
    Event(Value),
    /// An `error` from the hub (`history_unavailable`, `forbidden`, …).
    HubError(Value),
    /// The connection ended, or an attempt to open one failed; a
    /// [`Update::Reconnecting`] follows.
    Disconnected {
        /// The close code, when the hub sent a close frame.
        close_code: Option<u16>,
        /// What went wrong otherwise (a dropped socket, no heartbeat, a
        /// refused connection).
        error: Option<String>,
    },
    /// The next attempt starts after `delay` (backoff with jitter).
    Reconnecting {
        /// Exactly how long the subscriber waits.
        delay: Duration,
    },
    /// The hub closed for good (4003 by an admin, 1008 for abuse): no
    /// reconnect follows, and the stream ends.
    Closed(u16),
}

/// A reconnecting, resuming consumer of some rooms.
#[derive(Debug)]
pub struct Subscriber {
    url: String,
    rooms: Vec<String>,
    resume: Resume,
    client: Option<Client>,
    silence: Duration,
    attempt: u64,
    backoff: Duration,
    /// The wait before the next attempt, as announced.
    delay: Duration,
    connected_at: Instant,
    ready: VecDeque<Update>,
    done: bool,
}

impl Subscriber {
    /// A subscriber of `rooms` at `url` (`ws://host:port/ws`, with
    /// `?token=` when the hub needs one). It connects on the first
    /// [`Subscriber::next`].
    pub fn new(url: &str, rooms: &[&str]) -> Self {
        Self {
            url: url.to_string(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            resume: Resume::default(),
            client: None,
            silence: FIRST_SILENCE,
            attempt: 0,
            backoff: FIRST_BACKOFF,
            delay: Duration::ZERO,
            connected_at: Instant::now(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    /// What this subscriber has delivered so far.
    pub fn resume(&self) -> &Resume {
        &self.resume
    }

    /// The next update; `None` once the hub has closed for good.
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            if let Some(update) = self.ready.pop_front() {
                return Some(update);
            }
            if self.done {
                return None;
            }
            let Some(client) = &mut self.client else {
                self.connect().await;
                continue;
            };
            match client.next_within(self.silence).await {
                Next::Message(message) => self.take(message),
                Next::Closed(Closed::Code(code @ (4003 | 1008))) => {
                    self.client = None;
                    self.done = true;
                    return Some(Update::Closed(code));
                }
                Next::Closed(Closed::Code(code)) => self.lost(Some(code), None),
                // No close frame: ended, with nothing more to say.
                Next::Closed(Closed::Dropped) => self.lost(None, None),
                Next::TimedOut => {
                    self.lost(
                        None,
                        Some("no heartbeat within the heartbeat timeout".into()),
                    );
                }
            }
        }
    }

    async fn connect(&mut self) {
        if self.attempt > 0 {
            smol::Timer::after(self.delay).await;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
        self.attempt += 1;
        let mut client = match Client::connect(&self.url).await {
            Ok(client) => client,
            Err(e) => return self.failed(&e),
        };
        if let Some(ms) = client.welcome()["payload"]["heartbeat_timeout_ms"].as_u64() {
            self.silence = Duration::from_millis(ms) + Duration::from_secs(1);
        }
        if !self.rooms.is_empty() {
            let subscribe = self.resume.subscribe_message(&self.rooms);
            if let Err(e) = client.send(&subscribe).await {
                return self.failed(&e);
            }
        }
        self.connected_at = Instant::now();
        self.client = Some(client);
        self.ready.push_back(Update::Connected {
            attempt: self.attempt,
        });
    }

    fn take(&mut self, message: Value) {
        match message["type"].as_str().unwrap_or("") {
            "heartbeat" | "pong" | "welcome" => {}
            "subscribed" => {
                self.resume.subscribed(&message["payload"]);
                self.ready.push_back(Update::Subscribed(message));
            }
            "error" => self.ready.push_back(Update::HubError(message)),
            _ if message.get("id").is_some() && self.resume.accept(&message) => {
                self.ready.push_back(Update::Event(message));
            }
            _ => {}
        }
    }

    fn lost(&mut self, close_code: Option<u16>, error: Option<String>) {
        self.client = None;
        if self.connected_at.elapsed() >= STABLE_AFTER {
            self.backoff = FIRST_BACKOFF;
        }
        self.ready
            .push_back(Update::Disconnected { close_code, error });
        self.announce_retry();
    }

    fn failed(&mut self, error: &ClientError) {
        self.ready.push_back(Update::Disconnected {
            close_code: None,
            error: Some(error.to_string()),
        });
        self.announce_retry();
    }

    /// Picks the next wait and says so: jitter spreads the reconnects of
    /// many consumers after a restart.
    fn announce_retry(&mut self) {
        self.delay = self.backoff.mul_f64(0.5 + fastrand::f64());
        self.ready
            .push_back(Update::Reconnecting { delay: self.delay });
    }
}
