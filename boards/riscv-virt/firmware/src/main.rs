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
mod demo;
mod engine;
mod flash;
mod heap;
mod machine;
mod net;
mod wasmtime_platform;

use alloc::string::String;

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
    let port = args.config.port.unwrap_or(mqtt_protocol::Config::default_port(args.config.ssl));
    println!("riscv-virt: broker {}:{port}, {} messages to {} every {} ms", args.config.server, args.count, args.topic, args.interval_ms);
    let net = net::Network::start()?;
    let started = machine::now_ms();
    let flash = args.store.then_some(flash::CfiFlash);
    let mut client = board::start(net, flash, args.config.clone())?;
    let (in_use, _) = HEAP.usage();
    println!("component loaded and created in {} ms; heap in use {} KiB", machine::now_ms() - started, in_use / 1024);
    let subscription = mqtt_device::Subscription::new(args.topic.clone(), mqtt_device::Qos::AtLeastOnce);
    let demo = demo::Demo::new(args, &mut client)?;
    client.connect().map_err(|e| alloc::format!("connect: {e}"))?;
    client.subscribe(alloc::vec![subscription]).map_err(|e| alloc::format!("subscribe: {e}"))?;
    demo.run(&mut client)
}
