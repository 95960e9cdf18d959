//! Size probe for the power-cut store (see Cargo.toml for how to build each). Each feature
//! builds one module exporting `push`, `pop_key` and `count` over imported flash functions,
//! so the optimiser keeps exactly what the job needs.
#![no_std]

#[cfg(feature = "sequential-storage")]
mod seq_storage {
    use core::future::Future;
    use core::pin::pin;
    use core::task::{Context, Poll, Waker};
    use embedded_storage_async::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};
    use sequential_storage::cache::{Cache, Uncached};
    type NoCache = Cache<Uncached, Uncached, Uncached>;
    use sequential_storage::queue::{QueueConfig, QueueStorage};

    unsafe extern "C" {
        fn host_read(off: u32, ptr: *mut u8, len: u32) -> i32;
        fn host_write(off: u32, ptr: *const u8, len: u32) -> i32;
        fn host_erase(from: u32, to: u32) -> i32;
    }

    struct F;
    #[derive(Debug)]
    struct E;
    impl NorFlashError for E {
        fn kind(&self) -> NorFlashErrorKind {
            NorFlashErrorKind::Other
        }
    }
    impl ErrorType for F {
        type Error = E;
    }
    impl ReadNorFlash for F {
        const READ_SIZE: usize = 1;
        async fn read(&mut self, o: u32, b: &mut [u8]) -> Result<(), E> {
            if unsafe { host_read(o, b.as_mut_ptr(), b.len() as u32) } == 0 {
                Ok(())
            } else {
                Err(E)
            }
        }
        fn capacity(&self) -> usize {
            65536
        }
    }
    impl NorFlash for F {
        const WRITE_SIZE: usize = 4;
        const ERASE_SIZE: usize = 4096;
        async fn erase(&mut self, from: u32, to: u32) -> Result<(), E> {
            if unsafe { host_erase(from, to) } == 0 {
                Ok(())
            } else {
                Err(E)
            }
        }
        async fn write(&mut self, o: u32, b: &[u8]) -> Result<(), E> {
            if unsafe { host_write(o, b.as_ptr(), b.len() as u32) } == 0 {
                Ok(())
            } else {
                Err(E)
            }
        }
    }
    impl MultiwriteNorFlash for F {}

    fn block_on<T: Future>(f: T) -> T::Output {
        let mut f = pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    static mut Q: Option<QueueStorage<F, NoCache>> = None;
    static mut BUF: [u8; 1024] = [0; 1024];

    #[allow(static_mut_refs)]
    fn q() -> &'static mut QueueStorage<F, NoCache> {
        unsafe { Q.get_or_insert_with(|| QueueStorage::new(F, const { QueueConfig::new(0..65536) }, Cache::new_uncached())) }
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn push(ptr: *const u8, len: u32) -> i32 {
        let data = unsafe { core::slice::from_raw_parts(ptr, len as usize) };
        block_on(q().push(data, false)).map_or(1, |_| 0)
    }

    #[unsafe(no_mangle)]
    #[allow(static_mut_refs)]
    pub extern "C" fn pop_key(key: u32) -> i32 {
        block_on(async {
            let buf = unsafe { &mut BUF };
            let mut it = q().iter().await.map_err(|_| ())?;
            while let Some(e) = it.next(buf).await.map_err(|_| ())? {
                if e.get(..4) == Some(&key.to_le_bytes()[..]) {
                    e.pop().await.map_err(|_| ())?;
                    return Ok(0);
                }
            }
            Ok::<i32, ()>(1)
        })
        .unwrap_or(2)
    }

    #[unsafe(no_mangle)]
    #[allow(static_mut_refs)]
    pub extern "C" fn count() -> u32 {
        block_on(async {
            let buf = unsafe { &mut BUF };
            let mut n = 0;
            let Ok(mut it) = q().iter().await else { return 0 };
            while let Ok(Some(_)) = it.next(buf).await {
                n += 1;
            }
            n
        })
    }
}

#[cfg(feature = "ours")]
mod this_store {
    extern crate alloc;
    use alloc::boxed::Box;
    use alloc::vec::Vec;
    use mqtt_protocol::store::{Flash, FlashError, Geometry, Store};
    use mqtt_protocol::{OutgoingPublish, Properties, QoS};

    unsafe extern "C" {
        fn host_read(off: u32, ptr: *mut u8, len: u32) -> i32;
        fn host_write(off: u32, ptr: *const u8, len: u32) -> i32;
        fn host_erase(sector: u32) -> i32;
        fn host_sync() -> i32;
    }

    struct F;
    impl Flash for F {
        fn geometry(&self) -> Geometry {
            Geometry { capacity: 65536, sector_size: 4096, write_size: 4 }
        }
        fn read(&mut self, o: u32, len: u32) -> Result<Vec<u8>, FlashError> {
            let mut b = alloc::vec![0; len as usize];
            if unsafe { host_read(o, b.as_mut_ptr(), len) } == 0 {
                Ok(b)
            } else {
                Err(FlashError::Io)
            }
        }
        fn write(&mut self, o: u32, b: &[u8]) -> Result<(), FlashError> {
            if unsafe { host_write(o, b.as_ptr(), b.len() as u32) } == 0 {
                Ok(())
            } else {
                Err(FlashError::Io)
            }
        }
        fn erase(&mut self, s: u32) -> Result<(), FlashError> {
            if unsafe { host_erase(s) } == 0 {
                Ok(())
            } else {
                Err(FlashError::Io)
            }
        }
        fn sync(&mut self) -> Result<(), FlashError> {
            if unsafe { host_sync() } == 0 {
                Ok(())
            } else {
                Err(FlashError::Io)
            }
        }
    }

    static mut S: Option<Store> = None;

    #[allow(static_mut_refs)]
    fn s() -> &'static mut Store {
        unsafe { S.get_or_insert_with(|| Store::open(Box::new(F)).map(|(s, _)| s).unwrap_or_else(|_| loop {})) }
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn push(ptr: *const u8, len: u32) -> i32 {
        let payload = unsafe { core::slice::from_raw_parts(ptr, len as usize) }.to_vec();
        let p = OutgoingPublish { topic: "t".into(), payload, qos: QoS::AtLeastOnce, retain: false, properties: Properties::default() };
        s().accept(&p).and_then(|_| s().flush()).map_or(1, |_| 0)
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn pop_key(key: u32) -> i32 {
        s().done(key).and_then(|_| s().flush()).map_or(1, |_| 0)
    }

    #[unsafe(no_mangle)]
    #[allow(static_mut_refs)]
    pub extern "C" fn count() -> u32 {
        match Store::open(Box::new(F)) {
            Ok((_, r)) => r.outgoing.len() as u32,
            Err(_) => 0,
        }
    }
}

#[cfg(feature = "codec")]
mod codec_only {
    extern crate alloc;
    use mqtt_protocol::codec::{Decoder, Publish};
    use mqtt_protocol::{Packet, PacketId, Properties, ProtocolVersion, QoS};

    unsafe extern "C" {
        fn host_write(off: u32, ptr: *const u8, len: u32) -> i32;
    }

    #[unsafe(no_mangle)]
    pub extern "C" fn push(ptr: *const u8, len: u32) -> i32 {
        // What the store's records share with the client in the component: a PUBLISH encoded
        // (MQTT 5, properties) and decoded back (topic validation, properties).
        let payload = unsafe { core::slice::from_raw_parts(ptr, len as usize) }.to_vec();
        let p = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "t".into(),
            packet_id: PacketId::new(1),
            payload,
            properties: Properties::default(),
        });
        let bytes = p.encode(ProtocolVersion::V5);
        unsafe { host_write(0, bytes.as_ptr(), bytes.len() as u32) };
        let mut d = Decoder::new(ProtocolVersion::V5, 1 << 20);
        d.feed(&bytes);
        match d.next_packet() {
            Ok(Some(Packet::Publish(p))) => p.payload.len() as i32,
            _ => -1,
        }
    }
}

/// The smallest allocator that works, for the probes that allocate (the component has its
/// own; it is not what is compared).
#[cfg(any(feature = "ours", feature = "codec"))]
mod bump {
    use core::alloc::{GlobalAlloc, Layout};

    struct Bump;
    static mut NEXT: usize = 0;
    static mut HEAP: [u8; 1 << 16] = [0; 1 << 16];
    unsafe impl GlobalAlloc for Bump {
        #[allow(static_mut_refs)]
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            unsafe {
                let start = (NEXT + l.align() - 1) & !(l.align() - 1);
                if start + l.size() > HEAP.len() {
                    return core::ptr::null_mut();
                }
                NEXT = start + l.size();
                HEAP.as_mut_ptr().add(start)
            }
        }
        unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
    }
    #[global_allocator]
    static A: Bump = Bump;
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
