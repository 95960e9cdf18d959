//! The demo, as mqtt_as's: publish `count` QoS 1 messages to a topic the client subscribes
//! to, one every `interval-ms`, and wait until every one was acknowledged by the broker and
//! came back (and nothing an earlier life kept in flash is left). It drives the client: a
//! `poll` when the network, the client's deadline or a publish calls for one, the hart asleep
//! otherwise.

use alloc::collections::BTreeSet;
use alloc::string::{String, ToString};

use mqtt_device::{DeviceError, Event, Publish, Qos};

use crate::board::Device;
use crate::{args, machine, println, HEAP};

/// How often the link's state is looked at while nothing else wakes the board.
const LINK_CHECK_MS: u64 = 100;

pub struct Demo {
    args: args::Args,
    published: u32,
    tokens: BTreeSet<u64>,
    acknowledged: u32,
    received: BTreeSet<u32>,
    duplicates: u32,
    /// Publishes an earlier life of the board kept in flash, found at start. Their completions
    /// name no token of this life, and the device keeps them from the application, so they
    /// are counted here and known to be done when the client holds nothing any more.
    restored: u32,
    polls: u64,
}

impl Demo {
    /// The demo on a client just made: what it holds already (before the demo's subscription)
    /// is what an earlier life kept in flash.
    pub fn new(args: args::Args, client: &mut Device) -> Result<Demo, String> {
        let restored = client.stats().map_err(failed)?.map_or(0, |s| s.queued + s.inflight);
        Ok(Demo { args, published: 0, tokens: BTreeSet::new(), acknowledged: 0, received: BTreeSet::new(), duplicates: 0, restored, polls: 0 })
    }

    fn done(&self) -> bool {
        self.acknowledged == self.args.count && self.received.len() == self.args.count as usize
    }

    pub fn run(mut self, client: &mut Device) -> Result<(), String> {
        let start = machine::now_ms();
        let give_up = start + self.args.limit_ms;
        let mut next_publish = start;
        let mut deadline = Some(start);
        let mut link = client.platform_mut().net.link_up();
        loop {
            let activity = client.platform_mut().net.poll();
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
            let mut due = activity || deadline.is_some_and(|d| now >= d) || client.platform_mut().net.readable();
            let link_now = client.platform_mut().net.link_up();
            if link_now != link {
                println!("link {}", if link_now { "up" } else { "down" });
                link = link_now;
                due = true;
            }
            if self.published < self.args.count && now >= next_publish {
                let payload = self.published.to_string().into_bytes();
                match client.try_publish(Publish::new(self.args.topic.clone(), payload, Qos::AtLeastOnce)) {
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
                    Err(refused) if matches!(refused.0, DeviceError::Client(_)) => {
                        println!("publish {} refused for now: {}", self.published, refused.0);
                        next_publish = now + self.args.interval_ms;
                    }
                    Err(refused) => return Err(alloc::format!("publish: {}", refused.0)),
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
                if let Some(at) = client.platform_mut().net.next_poll_ms() {
                    wake = wake.min(at);
                }
                machine::idle_until(wake);
                continue;
            }
            self.polls += 1;
            if self.args.fault_every.is_some_and(|n| self.polls.is_multiple_of(n)) {
                // Fault injection (`fault-every`): this poll runs out of fuel at once, and the
                // device must restart the instance without losing anything it held.
                client.starve_next_call(0);
            }
            let events = client.poll_taking(64).map_err(failed)?;
            deadline = client.next_deadline().map_err(failed)?;
            for e in events {
                self.event(e)?;
            }
            client.platform_mut().net.poll();
            // Done with this life's messages, and nothing left of an earlier one's.
            if self.done() && client.stats().map_err(failed)?.is_some_and(|s| s.inflight == 0 && s.queued == 0) {
                println!(
                    "DONE published={} acknowledged={} received={} duplicates={} restored={} restarts={} polls={} in {} ms",
                    self.published,
                    self.acknowledged,
                    self.received.len(),
                    self.duplicates,
                    self.restored,
                    client.restarts(),
                    self.polls,
                    machine::now_ms() - start
                );
                let (in_use, peak) = HEAP.usage();
                let (open, closing) = client.platform_mut().net.sockets();
                println!("heap in use {} KiB, at most {} KiB; sockets open {open}, closing {closing}", in_use / 1024, peak / 1024);
                client.disconnect().map_err(failed)?;
                // The DISCONNECT out, and the close begun, before the emulation ends.
                let bye = machine::now_ms() + 200;
                while machine::now_ms() < bye {
                    client.platform_mut().net.poll();
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

/// The device could not go on: the component cannot be instantiated again, failed again
/// while being given back what it held, or failed at once too many times in a row.
fn failed(e: DeviceError) -> String {
    alloc::format!("the client failed: {e}")
}
