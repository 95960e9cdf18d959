//! The store's side of the session: what is written when, and what comes back at start-up
//! (the log itself is [`crate::store`]).

use alloc::boxed::Box;
use alloc::string::String;

use super::*;
use crate::store::{error_text, Flash, Store, StoreError, StoreReport};

impl Client {
    /// Keep what the application hands over across power cuts, on `flash`. Call once, right
    /// after [`Client::new`]: the publishes the log holds are queued again (with their
    /// packet ids, so a resumed session resends them with DUP; republished as new if the
    /// broker has no session; under the tokens their first life returned) and the incoming
    /// QoS 2 ids between PUBREC and PUBREL are restored. From then on `publish` returns a
    /// QoS 1/2 token only once the message is durable, and refuses with
    /// [`ApiError::StoreFull`] when there is no room.
    ///
    /// Returns what was recovered and any damage found, for the host to log; `Err` (the
    /// client then runs without a store) when the flash cannot hold a log.
    pub fn attach_store(&mut self, flash: Box<dyn Flash>) -> Result<StoreReport, String> {
        let (store, recovered) = Store::open(flash)?;
        let report = StoreReport { messages: recovered.outgoing.len() as u32, received: recovered.received.len() as u32, problems: recovered.problems };
        for p in recovered.outgoing {
            // Under the token its first life returned, so a host that kept it sees it complete.
            let token = Some(STORED_TOKEN | Token::from(p.key));
            let key = Some(p.key);
            let pid = p.pid.filter(|_| !self.faulty(TestFault::IdsNotRestored));
            match pid {
                Some(pid) => {
                    let waiting = if p.released { Waiting::Release } else { Waiting::Publish(p.publish) };
                    self.push_inflight(InFlight { pid, token, waiting, sent_at: self.now, repubs: 0, key });
                }
                None => self.pending.push_back(Queued { token, request: Request::Publish(p.publish), deadline: None, key }),
            }
        }
        self.incoming_qos2 = recovered.received;
        // Where the session lives (a failover may have moved it): the power-up connection
        // resumes it there, with the ids above. A config that lost that broker since starts
        // on the first one.
        let session = recovered.session as usize;
        if !self.cfg.clean_init && session != 0 && session < self.cfg.brokers() {
            self.broker = session;
            self.up_broker = Some(session);
        }
        self.store = Some(store);
        Ok(report)
    }

    /// Write a QoS 1/2 publish the application hands over, durably. `None` without a store.
    pub(super) fn store_publish(&mut self, publish: &OutgoingPublish) -> Result<Option<u32>, ApiError> {
        let no_sync = self.faulty(TestFault::NoSync);
        let Some(store) = self.store.as_mut().filter(|_| publish.qos != QoS::AtMostOnce) else { return Ok(None) };
        let key = match store.accept(publish) {
            Ok(key) => key,
            Err(StoreError::Full) => {
                self.stats.store_full += 1;
                return Err(ApiError::StoreFull);
            }
            Err(StoreError::TooLarge(max)) => return Err(ApiError::Invalid(text!("publish too large for the store (records up to ", max, " bytes)"))),
            Err(e) => return Err(ApiError::Storage(error_text(&e))),
        };
        if no_sync {
            return Ok(Some(key));
        }
        if let Err(e) = store.flush() {
            // Not durable: the application is told, so the message is not ours to keep.
            let _ = store.done(key);
            return Err(ApiError::Storage(error_text(&e)));
        }
        Ok(Some(key))
    }

    /// Apply `change` to the store, if there is one; a failure is reported, not fatal (the
    /// exchange goes on in RAM: at worst a message comes back after a power cut).
    pub(super) fn record(&mut self, change: impl FnOnce(&mut Store) -> Result<(), StoreError>) {
        let Some(store) = self.store.as_mut() else { return };
        let result = change(store);
        self.report_store_error(result);
    }

    /// Out of line: inlined into each of `record`'s instances, the report cost the
    /// component its code once per kind of record.
    #[inline(never)]
    fn report_store_error(&mut self, result: Result<(), StoreError>) {
        if let Err(e) = result {
            self.events.push_back(Event::Error(text!("store: ", error_text(&e))));
        }
    }

    /// The publish with this record is acknowledged, failed or given up.
    pub(super) fn forget(&mut self, key: Option<u32>) {
        if let Some(mut key) = key {
            if self.faulty(TestFault::ForgetWrongRecord) {
                key = key.wrapping_add(1);
            }
            self.record(|s| s.done(key));
        }
    }

    /// Make the records appended so far durable: before any byte or event that depends on
    /// them leaves the client.
    pub(super) fn sync_store(&mut self) {
        if !self.faulty(TestFault::NoSync) {
            self.record(Store::flush);
        }
    }
}
