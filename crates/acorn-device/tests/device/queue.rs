//! The durable press queue: delivery after a reboot (oldest first, same `pressId` and time),
//! the bound (oldest dropped and counted), a model-based property test against a reference,
//! and a power cut at every flash operation of enqueue and dequeue, plain and encrypted.

use std::collections::{BTreeMap, BTreeSet};

use acorn_device::{
    Action, DeviceConfig, MemoryPresses, MemorySettings, Notice, PressId, PressOutcome, PressStore,
    Tag, TransportEvent,
};
use acorn_nvs::{MemFlash, Mode, Nvs, NvsKeys, PowerCut};
use proptest::prelude::*;

use crate::support::{config, json, notices, publishes, Sim, PRESSES};

const SIZE: u32 = 0x6000;

fn nvs(flash: MemFlash, keys: Option<&NvsKeys>) -> Nvs<MemFlash> {
    Nvs::open_with(flash, 0, SIZE, keys, Mode::ReadWrite).expect("the queue partition mounts")
}

/// The press ids (as sent) and buttons of the press publishes among `actions`.
fn sent(actions: &[Action]) -> Vec<(String, String, String)> {
    publishes(actions)
        .into_iter()
        .filter(|p| p.topic == PRESSES)
        .map(|p| {
            let v = json(p);
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (field("pressId"), field("buttonRfId"), field("timestamp"))
        })
        .collect()
}

fn queued(outcome: Result<PressOutcome, acorn_device::Error>) -> PressId {
    match outcome {
        Ok(PressOutcome::Queued(id)) => id,
        other => panic!("{other:?}"),
    }
}

fn small(capacity: usize) -> DeviceConfig {
    let mut c = config();
    c.press_queue_capacity = capacity;
    c.press_window = (capacity / 2).max(1);
    c
}

#[test]
fn presses_from_before_a_reboot_go_first_with_their_id_and_time() {
    let flash = MemFlash::new(SIZE as usize);
    let mut sim = Sim::with_presses(config(), nvs(flash, None), 0);
    sim.start();
    let mut before = Vec::new();
    for i in 0..12 {
        sim.mono += 1_000;
        let id = queued(sim.press(&format!("rf-{i}"), Some(40)).0);
        before.push(id.to_string());
    }
    // Power off: the device is gone; the flash keeps what was written.
    let (_, store) = sim.device.into_stores();
    let flash = MemFlash::from_bytes(store.release().into_bytes());

    let mut sim = Sim::with_presses(config(), nvs(flash, None), 50_000);
    assert_eq!(sim.device.recovered_presses(), 12);
    assert!(sim.device.press_queue_warnings().is_empty());
    let actions = sim.start();
    assert!(notices(&actions)
        .iter()
        .any(|n| matches!(n, Notice::PressesRecovered { count: 12 })));
    let new = queued(sim.press("rf-new", None).0);
    assert!(
        before.iter().all(|old| *old < new.to_string()),
        "new ids sort after the old ones"
    );
    // Connected: the old presses go first, in order, then the new one, with the times of the
    // presses (1 s apart from the first run's start), not of the re-delivery.
    let mut actions = sim.connect_next(true);
    let mut got = Vec::new();
    for _ in 0..5 {
        got.extend(sent(&actions));
        actions = sim.ack(&actions);
    }
    let ids: Vec<&str> = got.iter().map(|(id, _, _)| id.as_str()).collect();
    let mut want: Vec<String> = before.clone();
    want.push(new.to_string());
    assert_eq!(ids, want);
    assert_eq!(got[0].2, "2026-11-28T16:42:01.000Z");
    assert_eq!(got[11].2, "2026-11-28T16:42:12.000Z");
    assert_eq!(got[0].1, "rf-0");
    // All acknowledged: the store is empty, also after another reboot.
    assert_eq!(sim.device.queued_presses().count(), 0);
    let (_, mut store) = sim.device.into_stores();
    assert!(store.load().unwrap().presses.is_empty());
}

#[test]
fn a_full_queue_drops_the_oldest_and_counts_it_across_reboots() {
    let mut c = small(5);
    c.heartbeat_override_ms = Some(1_000);
    let flash = MemFlash::new(SIZE as usize);
    let mut sim = Sim::with_presses(c.clone(), nvs(flash, None), 0);
    sim.start();
    let mut ids = Vec::new();
    let mut dropped = Vec::new();
    for i in 0..8 {
        let (outcome, actions) = sim.press(&format!("rf-{i}"), None);
        ids.push(queued(outcome));
        for n in notices(&actions) {
            if let Notice::PressDropped { press_id, .. } = n {
                dropped.push(*press_id);
            }
        }
    }
    assert_eq!(dropped, ids[..3], "the three oldest");
    assert_eq!(sim.device.dropped_presses(), 3);
    let kept: Vec<PressId> = sim.device.queued_presses().map(|p| p.id).collect();
    assert_eq!(kept, ids[3..]);

    let (_, store) = sim.device.into_stores();
    let flash = MemFlash::from_bytes(store.release().into_bytes());
    let mut sim = Sim::with_presses(c, nvs(flash, None), 10_000);
    assert_eq!(sim.device.dropped_presses(), 3);
    let mut actions = sim.connect_next(false);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.extend(sent(&actions));
        actions = sim.ack(&actions);
    }
    let want: Vec<String> = ids[3..].iter().map(ToString::to_string).collect();
    let got: Vec<String> = got.into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(got, want);
    // The next heartbeat says so.
    let beat = publishes(&sim.advance(1_000))
        .into_iter()
        .find(|p| p.tag == Tag::Heartbeat)
        .map(json)
        .expect("a heartbeat");
    assert_eq!(beat["droppedPresses"], 3);
    assert_eq!(beat["queuedPresses"], 0);
}

#[test]
fn a_press_is_never_refused_when_the_store_fails() {
    // A read-only partition: every write fails. Presses still go out (RAM only), each with
    // a warning that a restart would lose it.
    let mut flash = nvs(MemFlash::new(SIZE as usize), None).release();
    flash.cut_power(PowerCut {
        at_op: 0,
        torn_bytes: 0,
    });
    let mut sim = Sim::with_presses(config(), nvs(flash, None), 0);
    assert!(!sim.device.press_queue_warnings().is_empty());
    sim.connect_next(true);
    let (outcome, actions) = sim.press("rf-1", None);
    queued(outcome);
    assert!(notices(&actions)
        .iter()
        .any(|n| matches!(n, Notice::PressNotStored { .. })));
    assert_eq!(sent(&actions).len(), 1);
}

// ----- model-based property test -------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Press,
    Connect(bool),
    AckOne(usize),
    AckAll,
    Disconnect,
    Reboot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Press),
        2 => any::<bool>().prop_map(Op::Connect),
        3 => any::<usize>().prop_map(Op::AckOne),
        1 => Just(Op::AckAll),
        1 => Just(Op::Disconnect),
        1 => Just(Op::Reboot),
    ]
}

/// The reference: which presses are alive (pressed, not yet acknowledged nor dropped), by id,
/// with their button.
#[derive(Default)]
struct Model {
    alive: BTreeMap<PressId, String>,
    pressed: BTreeMap<PressId, String>,
    delivered: BTreeSet<PressId>,
    dropped: u32,
}

struct Harness<Q: PressStore> {
    sim: Sim<MemorySettings, Q>,
    outstanding: Vec<Tag>,
    connected: bool,
}

impl<Q: PressStore> Harness<Q> {
    fn absorb(&mut self, model: &mut Model, actions: &[Action]) -> Result<(), TestCaseError> {
        for action in actions {
            match action {
                Action::Publish(p) if p.topic == PRESSES => {
                    let v = json(p);
                    let id = PressId::parse(v["pressId"].as_str().unwrap()).unwrap();
                    // Only live presses are sent, each under the id it was given.
                    prop_assert_eq!(
                        model.pressed.get(&id),
                        Some(&v["buttonRfId"].as_str().unwrap().to_owned())
                    );
                    prop_assert!(
                        !model.delivered.contains(&id),
                        "{} sent after its PUBACK",
                        id
                    );
                    self.outstanding.push(p.tag);
                }
                Action::Publish(p) => self.outstanding.push(p.tag),
                Action::Notice(Notice::PressDelivered { press_id }) => {
                    prop_assert!(
                        model.alive.remove(press_id).is_some(),
                        "{} delivered twice",
                        press_id
                    );
                    model.delivered.insert(*press_id);
                }
                Action::Notice(Notice::PressDropped { press_id, .. }) => {
                    prop_assert!(model.alive.remove(press_id).is_some());
                    model.dropped += 1;
                }
                Action::Notice(Notice::PressNotStored { .. } | Notice::PressNotRemoved { .. }) => {
                    prop_assert!(false, "the store never fails here");
                }
                Action::Connect(_) => {
                    self.outstanding.clear();
                    self.connected = false;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check(&mut self, model: &Model, capacity: usize) -> Result<(), TestCaseError> {
        let ram: Vec<PressId> = self.sim.device.queued_presses().map(|p| p.id).collect();
        let want: Vec<PressId> = model.alive.keys().copied().collect();
        prop_assert_eq!(&ram, &want, "RAM view = model (oldest first)");
        prop_assert!(ram.len() <= capacity);
        prop_assert_eq!(self.sim.device.dropped_presses(), model.dropped);
        Ok(())
    }
}

fn run_model<Q: PressStore>(
    store: Q,
    ops: &[Op],
    capacity: usize,
    reopen: impl Fn(Q) -> Q,
) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut h = Harness {
        sim: Sim::with_presses(small(capacity), store, 0),
        outstanding: Vec::new(),
        connected: false,
    };
    let actions = h.sim.start();
    h.absorb(&mut model, &actions)?;
    let mut n = 0;
    for op in ops {
        h.sim.mono += 1_100;
        let actions = match op {
            Op::Press => {
                n += 1;
                let button = format!("rf-{n}");
                let (outcome, actions) = h.sim.press(&button, None);
                let id = queued(outcome);
                model.alive.insert(id, button.clone());
                model.pressed.insert(id, button);
                actions
            }
            Op::Connect(session_present) => {
                if h.connected {
                    continue;
                }
                h.connected = true;
                h.sim.connect_next(*session_present)
            }
            Op::AckOne(i) if !h.outstanding.is_empty() => {
                let tag = h.outstanding.remove(i % h.outstanding.len());
                h.sim.event(TransportEvent::PubAck(tag))
            }
            Op::AckOne(_) => continue,
            Op::AckAll => {
                let tags: Vec<Tag> = h.outstanding.drain(..).collect();
                let mut actions = Vec::new();
                for tag in tags {
                    actions.extend(h.sim.event(TransportEvent::PubAck(tag)));
                }
                actions
            }
            Op::Disconnect => {
                h.connected = false;
                h.outstanding.clear();
                h.sim.event(TransportEvent::Disconnected {
                    cause: acorn_device::acorn_mqtt::DisconnectCause::Network,
                    diagnosis: "gone".into(),
                })
            }
            Op::Reboot => {
                let mono = h.sim.mono;
                let (_, store) = h.sim.device.into_stores();
                h = Harness {
                    sim: Sim::with_presses(small(capacity), reopen(store), mono),
                    outstanding: Vec::new(),
                    connected: false,
                };
                prop_assert_eq!(h.sim.device.recovered_presses(), model.alive.len());
                h.sim.start()
            }
        };
        h.absorb(&mut model, &actions)?;
        h.check(&model, capacity)?;
    }
    // Conservation: every press is delivered, dropped (counted) or still queued.
    prop_assert_eq!(
        model.pressed.len(),
        model.delivered.len() + model.dropped as usize + model.alive.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_queue_behaves_like_its_model_in_ram(ops in proptest::collection::vec(op(), 1..120)) {
        run_model(MemoryPresses::default(), &ops, 6, |s| s)?;
    }

    #[test]
    fn the_queue_behaves_like_its_model_in_nvs(ops in proptest::collection::vec(op(), 1..80)) {
        let store = nvs(MemFlash::new(SIZE as usize), None);
        run_model(store, &ops, 6, |s| nvs(MemFlash::from_bytes(s.release().into_bytes()), None))?;
    }
}

// ----- power cut at every flash operation ------------------------------------------------

/// What a workload run saw before its flash died (or to the end).
#[derive(Default, Debug)]
struct Trace {
    /// Presses answered `Queued` with no store failure: id → button.
    acknowledged: BTreeMap<PressId, String>,
    /// Every press id handed out: id → button.
    pressed: BTreeMap<PressId, String>,
    /// Presses whose PUBACK came.
    delivered: BTreeSet<PressId>,
    /// Presses dropped as the oldest of a full queue.
    dropped: BTreeSet<PressId>,
    /// Whether a store operation failed (the cut).
    cut: bool,
}

fn store_failed(actions: &[Action]) -> bool {
    notices(actions).iter().any(|n| {
        matches!(
            n,
            Notice::PressNotStored { .. } | Notice::PressNotRemoved { .. }
        )
    })
}

/// Drives the workload and records what it saw; every step reports whether the device may
/// go on (no store failure yet: a device whose power is cut stops).
struct Workload<'a> {
    sim: &'a mut Sim<MemorySettings, Nvs<MemFlash>>,
    trace: &'a mut Trace,
    outstanding: Vec<Tag>,
    n: usize,
}

impl Workload<'_> {
    fn saw(&mut self, actions: &[Action]) -> Option<()> {
        for n in notices(actions) {
            match n {
                Notice::PressDelivered { press_id } => {
                    self.trace.delivered.insert(*press_id);
                }
                Notice::PressDropped { press_id, .. } => {
                    self.trace.dropped.insert(*press_id);
                }
                _ => {}
            }
        }
        self.outstanding
            .extend(publishes(actions).iter().map(|p| p.tag));
        if store_failed(actions) {
            self.trace.cut = true;
        }
        (!self.trace.cut).then_some(())
    }

    fn press(&mut self) -> Option<()> {
        self.n += 1;
        let button = format!("rf-{}", self.n);
        self.sim.mono += 1_100;
        let (outcome, actions) = self.sim.press(&button, None);
        let id = queued(outcome);
        self.trace.pressed.insert(id, button.clone());
        if !store_failed(&actions) {
            self.trace.acknowledged.insert(id, button);
        }
        self.saw(&actions)
    }

    fn ack_all(&mut self) -> Option<()> {
        let tags: Vec<Tag> = self.outstanding.drain(..).collect();
        for tag in tags {
            let actions = self.sim.event(TransportEvent::PubAck(tag));
            self.saw(&actions)?;
        }
        Some(())
    }

    /// Presses while offline (some dropped: capacity 6), a connect, PUBACKs, more presses, a
    /// lost connection and a reconnect: every kind of queue write; 80 rounds, so that the
    /// partition fills and the NVS engine reclaims pages under the queue.
    fn run(&mut self) -> Option<()> {
        let actions = self.sim.start();
        self.saw(&actions)?;
        for _ in 0..8 {
            self.press()?;
        }
        let actions = self.sim.connect_next(true);
        self.saw(&actions)?;
        for round in 0..80 {
            self.ack_all()?;
            for _ in 0..4 {
                self.press()?;
            }
            if round % 20 == 1 {
                let actions = self.sim.event(TransportEvent::Disconnected {
                    cause: acorn_device::acorn_mqtt::DisconnectCause::Network,
                    diagnosis: "gone".into(),
                });
                self.outstanding.clear();
                self.saw(&actions)?;
                for _ in 0..5 {
                    self.press()?;
                }
                self.sim.mono += 700_000;
                let actions = self.sim.connect_next(false);
                self.saw(&actions)?;
            }
        }
        self.ack_all()
    }
}

fn run_with_cut(keys: Option<&NvsKeys>, cut: PowerCut) -> (MemFlash, Trace) {
    let mut flash = MemFlash::new(SIZE as usize);
    flash.cut_power(cut);
    let mut sim = Sim::with_presses(small(6), nvs(flash, keys), 0);
    let mut trace = Trace::default();
    if !sim.device.press_queue_warnings().is_empty() {
        trace.cut = true;
    } else {
        let _ = Workload {
            sim: &mut sim,
            trace: &mut trace,
            outstanding: Vec::new(),
            n: 0,
        }
        .run();
    }
    let (_, store) = sim.device.into_stores();
    (store.release(), trace)
}

fn check_every_cut(keys: Option<&NvsKeys>, torn_bytes: usize) -> usize {
    let (clean, trace) = run_with_cut(
        keys,
        PowerCut {
            at_op: usize::MAX,
            torn_bytes: 0,
        },
    );
    assert!(!trace.cut);
    assert!(!trace.dropped.is_empty() && !trace.delivered.is_empty());
    let total = clean.ops();
    for at_op in 0..total {
        let (flash, trace) = run_with_cut(keys, PowerCut { at_op, torn_bytes });
        assert!(trace.cut, "cut at op {at_op} must interrupt the workload");
        // Power back: a new device on the bytes that reached the flash.
        let flash = MemFlash::from_bytes(flash.into_bytes());
        let store = Nvs::open_with(flash, 0, SIZE, keys, Mode::ReadWrite)
            .unwrap_or_else(|e| panic!("mount after a cut at op {at_op}: {e}"));
        let mut sim = Sim::with_presses(small(6), store, 10_000_000);
        assert!(
            sim.device.press_queue_warnings().is_empty(),
            "cut at op {at_op}: {:?}",
            sim.device.press_queue_warnings()
        );
        let stored: BTreeMap<PressId, String> = sim
            .device
            .queued_presses()
            .map(|p| (p.id, p.button.clone()))
            .collect();
        // Every acknowledged press that was neither delivered nor dropped is there.
        for (id, button) in &trace.acknowledged {
            if !trace.delivered.contains(id) && !trace.dropped.contains(id) {
                assert_eq!(
                    stored.get(id),
                    Some(button),
                    "cut at op {at_op} (torn {torn_bytes}): acknowledged press {id} lost"
                );
            }
        }
        // Nothing else: each stored press is one that was pressed, under its own id (so no
        // press appears twice under different ids).
        let mut buttons = BTreeSet::new();
        for (id, button) in &stored {
            assert_eq!(
                trace.pressed.get(id),
                Some(button),
                "cut at op {at_op}: {id}"
            );
            assert!(
                buttons.insert(button.clone()),
                "cut at op {at_op}: {button} twice"
            );
        }
        // And the queue goes on: a new press is stored, after the old ones.
        let (outcome, actions) = sim.press("rf-after", None);
        let id = queued(outcome);
        assert!(
            !store_failed(&actions),
            "cut at op {at_op}: the store still works"
        );
        assert!(stored.keys().all(|old| *old < id));
    }
    eprintln!(
        "press queue: power cut at each of {total} flash operations (torn bytes {torn_bytes}): every acknowledged press kept"
    );
    total
}

#[test]
fn every_cut_keeps_every_acknowledged_press_plain() {
    let clean = check_every_cut(None, 0);
    assert!(
        clean > 1000,
        "the workload is too small: {clean} operations"
    );
    check_every_cut(None, 13);
}

#[test]
fn every_cut_keeps_every_acknowledged_press_encrypted() {
    let keys = NvsKeys::new([0xA5; 32], [0x5A; 32]);
    check_every_cut(Some(&keys), 0);
    check_every_cut(Some(&keys), 2);
}
