//! The MQTT client component on a RISC-V board with no operating system: QEMU's `virt`
//! machine, in machine mode. wasmtime runs the component on its Pulley interpreter
//! (precompiled by `build.rs`, no Cranelift here), smoltcp gives it TCP over virtio-net.
//!
//! What it does, like mqtt_as's demos: connect, subscribe to a topic, publish `count` QoS 1
//! messages to it one every `interval-ms` (whether or not the broker is reachable: the client
//! holds them until it is), and wait until every one was acknowledged by the broker and came
//! back. Turning the link off and on meanwhile (QEMU's `set_link`) is an outage it must ride
//! out. The console says what happened; the exit status is 0 only if nothing was lost.

#![no_std]
#![no_main]

extern crate alloc;

mod args;
mod board;
mod engine;
mod flash;
mod heap;
mod machine;
mod net;
mod wasmtime_platform;

mod bindings {
    wasmtime::component::bindgen!({ path: "../../../wit", world: "mqtt-client" });
}

use alloc::collections::BTreeSet;
use alloc::string::{String, ToString};

use bindings::exports::mqtt_as::client::client::{Event, Publish, Qos};

#[global_allocator]
static HEAP: heap::CountingHeap = heap::CountingHeap::empty();

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("panic: {info}");
    machine::exit(101)
}

#[riscv_rt::entry]
fn main(_hart: usize, dtb: usize) -> ! {
    // SAFETY: the heap region riscv-rt's linker script reserves (`_heap_size` in memory.x),
    // handed to the allocator once, before any allocation.
    unsafe { HEAP.init(riscv_rt::heap_start() as usize, heap_size()) };
    let status = match run(dtb) {
        Ok(()) => 0,
        Err(why) => {
            println!("FAILED: {why}");
            1
        }
    };
    machine::exit(status)
}

fn heap_size() -> usize {
    unsafe extern "C" {
        static _heap_size: u8;
    }
    // A linker symbol whose address is the size; never read.
    core::ptr::addr_of!(_heap_size) as usize
}

fn run(dtb: usize) -> Result<(), String> {
    let args = args::Args::parse(args::bootargs(dtb)?)?;
    let port = args.config.port.unwrap_or(if args.config.ssl { 8883 } else { 1883 });
    println!("riscv-virt: broker {}:{port}, {} messages to {} every {} ms", args.config.server, args.count, args.topic, args.interval_ms);
    let net = net::Network::start()?;
    let started = machine::now_ms();
    let flash = args.store.then_some(flash::CfiFlash);
    let mut client = board::Client::new(net, flash, &args.config)?;
    let (in_use, _) = HEAP.usage();
    println!("component loaded and created in {} ms; heap in use {} KiB", machine::now_ms() - started, in_use / 1024);
    client.connect()?;
    client.subscribe(&args.topic)?;
    Demo::new(args).run(&mut client)
}

struct Demo {
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
    fn new(args: args::Args) -> Demo {
        Demo { args, published: 0, tokens: BTreeSet::new(), acknowledged: 0, received: BTreeSet::new(), duplicates: 0, restored: 0 }
    }

    fn done(&self) -> bool {
        self.acknowledged == self.args.count && self.received.len() == self.args.count as usize
    }

    fn run(mut self, client: &mut board::Client) -> Result<(), String> {
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
                let mut wake = deadline.unwrap_or(u64::MAX).min(give_up);
                if self.published < self.args.count {
                    wake = wake.min(next_publish);
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
                let bye = machine::now_ms();
                while machine::now_ms() < bye + 200 {
                    client.board().net.poll();
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
