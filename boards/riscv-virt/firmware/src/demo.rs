//! The demo, as mqtt_as's: publish `count` QoS 1 messages to a topic the client subscribes
//! to, one every `interval-ms`, and wait until every one was acknowledged by the broker and
//! came back (and nothing an earlier life kept in flash is left). It drives the client: a
//! `poll` when the network, the client's deadline or a publish calls for one, the hart asleep
//! otherwise.

use alloc::collections::BTreeSet;
use alloc::string::{String, ToString};

use crate::bindings::exports::mqtt_as::client::client::{Event, Publish, Qos};
use crate::{args, board, machine, println, HEAP};

/// How often the link's state is looked at while nothing else wakes the board.
const LINK_CHECK_MS: u64 = 100;

pub struct Demo {
    args: args::Args,
    published: u32,
    tokens: BTreeSet<u64>,
    acknowledged: u32,
    received: BTreeSet<u32>,
    duplicates: u32,
    /// Completions of publishes an earlier life of the board kept in flash.
    restored: u32,
}

impl Demo {
    pub fn new(args: args::Args) -> Demo {
        Demo { args, published: 0, tokens: BTreeSet::new(), acknowledged: 0, received: BTreeSet::new(), duplicates: 0, restored: 0 }
    }

    fn done(&self) -> bool {
        self.acknowledged == self.args.count && self.received.len() == self.args.count as usize
    }

    pub fn run(mut self, client: &mut board::Client) -> Result<(), String> {
        let start = machine::now_ms();
        let give_up = start + self.args.limit_ms;
        let mut next_publish = start;
        let mut deadline = Some(start);
        let mut link = client.board().net.link_up();
        loop {
            let activity = client.board().net.poll();
            let now = machine::now_ms();
            if now > give_up {
                return Err(alloc::format!(
                    "gave up after {} s: {} published, {} acknowledged, {} of {} received",
                    self.args.limit_ms / 1000,
                    self.published,
                    self.acknowledged,
                    self.received.len(),
                    self.args.count
                ));
            }
            let mut due = activity || deadline.is_some_and(|d| now >= d) || client.board().net.readable();
            let link_now = client.board().net.link_up();
            if link_now != link {
                println!("link {}", if link_now { "up" } else { "down" });
                link = link_now;
                due = true;
            }
            if self.published < self.args.count && now >= next_publish {
                let payload = self.published.to_string().into_bytes();
                let p = Publish { topic: self.args.topic.clone(), payload, qos: Qos::AtLeastOnce, retain: false, properties: None, deadline_ms: None };
                match client.publish(now, p).map_err(trapped)? {
                    Ok(token) => {
                        self.tokens.insert(token);
                        self.published += 1;
                        if self.published == self.args.count {
                            println!("published {}, every one accepted", self.published);
                        }
                        next_publish = now + self.args.interval_ms;
                        due = true;
                    }
                    // Full for now (a long outage): tried again at the next interval.
                    Err(why) => {
                        println!("publish {} refused for now: {why}", self.published);
                        next_publish = now + self.args.interval_ms;
                    }
                }
            }
            if !due {
                // Asleep until the client's deadline, the next publish, the network stack's own
                // timer, a frame, or the time to give up. The link's state has no interrupt:
                // it is looked at every 100 ms at the latest.
                let mut wake = deadline.unwrap_or(u64::MAX).min(give_up).min(now + LINK_CHECK_MS);
                if self.published < self.args.count {
                    wake = wake.min(next_publish);
                }
                if let Some(at) = client.board().net.next_poll_ms() {
                    wake = wake.min(at);
                }
                machine::idle_until(wake);
                continue;
            }
            let polled = client.poll(now, 64).map_err(trapped)?;
            deadline = polled.next_deadline;
            for e in polled.events {
                self.event(e)?;
            }
            client.board().net.poll();
            // Done with this life's messages, and nothing left of an earlier one's.
            if self.done() && client.stats().map_err(trapped).map(|s| s.inflight == 0 && s.queued == 0)? {
                println!(
                    "DONE published={} acknowledged={} received={} duplicates={} restored={} in {} ms",
                    self.published,
                    self.acknowledged,
                    self.received.len(),
                    self.duplicates,
                    self.restored,
                    machine::now_ms() - start
                );
                let (in_use, peak) = HEAP.usage();
                let (open, closing) = client.board().net.sockets();
                println!("heap in use {} KiB, at most {} KiB; sockets open {open}, closing {closing}", in_use / 1024, peak / 1024);
                client.disconnect().map_err(trapped)?;
                // The DISCONNECT out, and the close begun, before the emulation ends.
                let bye = machine::now_ms() + 200;
                while machine::now_ms() < bye {
                    client.board().net.poll();
                    machine::idle_until(bye);
                }
                return Ok(());
            }
        }
    }

    fn event(&mut self, e: Event) -> Result<(), String> {
        match e {
            Event::Up(session_present) => println!("up (session present: {session_present})"),
            Event::Down(why) => println!("down: {why:?}"),
            Event::Message(m) => {
                let n = core::str::from_utf8(&m.payload).ok().and_then(|s| s.parse::<u32>().ok());
                match n {
                    Some(n) if n < self.args.count => {
                        if !self.received.insert(n) {
                            self.duplicates += 1;
                        }
                    }
                    _ => println!("a message not of this run on {}: {:?}", m.topic, m.payload),
                }
            }
            Event::Published(token) => {
                if self.tokens.remove(&token) {
                    self.acknowledged += 1;
                } else {
                    self.restored += 1;
                }
            }
            Event::PublishFailed((token, reason)) => return Err(alloc::format!("publish {token} failed: reason {reason:#04x}")),
            Event::ConnectFailed(why) => println!("connect failed: {why}"),
            Event::Discarded(n) => return Err(alloc::format!("{n} incoming messages discarded")),
            Event::Error(why) => println!("client error: {why}"),
            Event::Subscribed(_) | Event::Unsubscribed(_) | Event::BrokerUp(_) | Event::Link(_) | Event::Auth(_) => {}
        }
        Ok(())
    }
}

fn trapped(e: board::Trap) -> String {
    alloc::format!("the component trapped: {e}")
}
