//! Tests of the hint table: lanes set and cleared, lane columns, layouts.

use super::*;

fn rooms(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn lanes(reach: Reach) -> Vec<usize> {
    match reach {
        Reach::Lanes(set) => set.iter().collect(),
        Reach::Primary => panic!("expected lanes, got the primary"),
    }
}

#[test]
fn the_hash_is_fixed() {
    // Processes of one cluster may run different builds (a reload): the
    // values of this layout never change.
    // (Computed apart from this code: FNV-1a 64, then splitmix64's finaliser.)
    assert_eq!(hash("/", "room"), 0x2a78_14c8_24dc_1e0d);
    assert_eq!(hash("/chat", "general"), 0x6404_985a_2ff7_f8aa);
    assert_ne!(
        hash("/", "ab"),
        hash("/a", "b"),
        "the separator keeps them apart"
    );
    assert_ne!(hash("/", "a"), hash("/chat", "a"));
    assert_ne!(hash_everyone("/"), hash("/", ""), "everyone is no room");
}

#[test]
fn rooms_spread_over_the_slots() {
    let (table, _fd) = HintTable::create_with(1 << 10, 4).unwrap();
    let used: std::collections::HashSet<usize> = (0..1000)
        .map(|i| table.slot("/", &format!("room-{i}")))
        .collect();
    // 1000 keys in 1024 slots: about 630 distinct ones if the hash is uniform.
    assert!(used.len() > 580, "{} slots used", used.len());
}

#[test]
fn lane_bits_are_set_on_the_first_member_and_cleared_on_the_last() {
    let (table, fd) = HintTable::create_with(1024, 4).unwrap();
    let a = Hints::new(table, 0).unwrap();
    let b = Hints::new(HintTable::open(&fd).unwrap(), 3).unwrap();
    assert!(a.alone("/", &rooms(&["r"])), "nobody has it");
    a.appeared("/", "r");
    a.appeared("/", "r");
    assert!(a.alone("/", &rooms(&["r"])), "only a has it");
    assert_eq!(
        lanes(b.reach("/", &rooms(&["r"]))),
        vec![0],
        "b sees a's lane"
    );
    assert_eq!(lanes(b.reach("/", &rooms(&["x", "r"]))), vec![0], "a union");
    b.appeared("/", "r");
    assert_eq!(lanes(a.reach("/", &rooms(&["r"]))), vec![3]);
    a.gone("/", "r");
    assert_eq!(
        lanes(b.reach("/", &rooms(&["r"]))),
        vec![0],
        "a still counts one member"
    );
    a.gone("/", "r");
    assert!(
        b.alone("/", &rooms(&["r"])),
        "a's bit went with its last member"
    );
    b.gone("/", "r");
    assert!(a.alone("/", &rooms(&["r"])));
    // Namespaces are apart.
    a.appeared("/chat", "r");
    assert!(b.alone("/", &rooms(&["r"])));
    assert_eq!(lanes(b.reach("/chat", &rooms(&["r"]))), vec![0]);
}

#[test]
fn everyone_and_socket_ids_reach_every_other_lane() {
    let (table, _fd) = HintTable::create_with(1024, 4).unwrap();
    let a = Hints::new(table, 1).unwrap();
    assert_eq!(lanes(a.reach("/", &[])), vec![0, 2, 3]);
    assert!(!a.alone("/", &[]), "a broadcast to everyone");
    let sid = crate::engine::Sid::random().to_string();
    assert_eq!(lanes(a.reach("/", &rooms(&[&sid]))), vec![0, 2, 3]);
    assert!(!a.alone("/", &rooms(&[&sid])));
}

/// Forces `rooms` of `nsp` (none: every socket) as an operation would.
fn force(h: &Hints, nsp: &str, rooms: &[&str]) -> Vec<usize> {
    let slots = h.table().forced_slots(nsp, rooms);
    h.table().force(&slots);
    slots
}

#[test]
fn forced_rooms_and_everyone_go_through_the_primary_until_released() {
    let (table, fd) = HintTable::create_with(1024, 4).unwrap();
    let primary = HintTable::open(&fd).unwrap();
    let a = Hints::new(table, 0).unwrap();
    a.appeared("/", "j");
    let j = force(&a, "/", &["j"]);
    assert_eq!(a.reach("/", &rooms(&["j"])), Reach::Primary);
    assert_eq!(a.reach("/", &rooms(&["x", "j"])), Reach::Primary);
    assert!(
        !a.alone("/", &rooms(&["j"])),
        "forced, even with own members"
    );
    a.gone("/", "j");
    assert!(!a.alone("/", &rooms(&["j"])), "forced until released");
    // A second operation on the same room: each release ends its own force.
    let again = force(&a, "/", &["j"]);
    primary.release(&j);
    assert_eq!(
        a.reach("/", &rooms(&["j"])),
        Reach::Primary,
        "one force left"
    );
    primary.release(&again);
    assert!(
        a.alone("/", &rooms(&["j"])),
        "released: routed by the lanes again"
    );
    primary.release(&again);
    let j2 = force(&a, "/", &["j"]);
    assert_eq!(
        a.reach("/", &rooms(&["j"])),
        Reach::Primary,
        "a release too many ended nothing in advance"
    );
    primary.release(&j2);

    assert!(matches!(a.reach("/", &[]), Reach::Lanes(_)));
    let everyone = force(&a, "/", &[]);
    assert_eq!(everyone, vec![primary.everyone("/")]);
    assert_eq!(a.reach("/", &[]), Reach::Primary);
    assert!(matches!(a.reach("/other", &[]), Reach::Lanes(_)));
    assert!(matches!(a.reach("/", &rooms(&["x"])), Reach::Lanes(_)));
    primary.release(&everyone);
    assert!(matches!(a.reach("/", &[]), Reach::Lanes(_)));
}

#[test]
fn what_an_operation_forces() {
    use rsio_ipc::Target;
    let target = |rooms: &[&str]| Target {
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
        ..Target::default()
    };
    let join = Message::SocketsJoin {
        nsp: "/".into(),
        target: target(&["user"]),
        rooms: rooms(&["a", "b"]),
    };
    assert_eq!(
        forced_by(&join),
        Some(("/", &rooms(&["a", "b"])[..])),
        "the joined rooms"
    );
    let leave = Message::SocketsLeave {
        nsp: "/".into(),
        target: target(&[]),
        rooms: rooms(&["a"]),
    };
    assert_eq!(
        forced_by(&leave),
        Some(("/", &rooms(&["a"])[..])),
        "the rooms left"
    );
    let leave_none = Message::SocketsLeave {
        nsp: "/".into(),
        target: target(&[]),
        rooms: Vec::new(),
    };
    assert_eq!(forced_by(&leave_none), None);
    let kick = Message::DisconnectSockets {
        nsp: "/".into(),
        target: target(&["user"]),
        close: false,
    };
    assert_eq!(
        forced_by(&kick),
        Some(("/", &rooms(&["user"])[..])),
        "the target rooms"
    );
    assert_eq!(forced_by(&Message::Heartbeat), None);
}

#[test]
fn clearing_a_lane_forgets_a_dead_process_and_nothing_else() {
    let (table, fd) = HintTable::create_with(1024, 4).unwrap();
    let primary = HintTable::open(&fd).unwrap();
    let dead = Hints::new(table, 2).unwrap();
    let live = Hints::new(HintTable::open(&fd).unwrap(), 1).unwrap();
    primary.set_epoch(2, 7);
    for i in 0..100 {
        dead.appeared("/", &format!("r{i}"));
    }
    live.appeared("/", "r5");
    force(&live, "/", &["f"]);
    assert_eq!(lanes(live.reach("/", &rooms(&["r5", "r6"]))), vec![2]);
    // The process of lane 2 was killed with its rooms: the primary clears it.
    drop(dead);
    primary.clear_lane(2);
    assert_eq!(primary.epoch(2), 0);
    for i in 0..100 {
        let slot = primary.slot("/", &format!("r{i}"));
        assert!(!primary.has_lane(slot, 2), "r{i} still on lane 2");
    }
    assert!(live.alone("/", &rooms(&["r5", "r6"])));
    assert!(
        primary.has_lane(primary.slot("/", "r5"), 1),
        "others' bits stay"
    );
    assert_eq!(
        live.reach("/", &rooms(&["f"])),
        Reach::Primary,
        "forced stays"
    );
}

#[test]
fn lanes_past_64() {
    let (table, fd) = HintTable::create_with(64, 130).unwrap();
    let a = Hints::new(table, 129).unwrap();
    let b = Hints::new(HintTable::open(&fd).unwrap(), 64).unwrap();
    a.appeared("/", "r");
    b.appeared("/", "r");
    assert_eq!(lanes(a.reach("/", &rooms(&["r"]))), vec![64]);
    assert_eq!(lanes(b.reach("/", &rooms(&["r"]))), vec![129]);
    assert_eq!(a.table().lanes(), 130);
    assert!(Hints::new(HintTable::open(&fd).unwrap(), 130).is_err());
    assert!(HintTable::create_with(64, MAX_WORDS * 64).is_ok());
    assert!(matches!(
        HintTable::create_with(64, MAX_WORDS * 64 + 1),
        Err(HintError::TooManyLanes { .. })
    ));
}

#[test]
fn another_layout_disables_the_table_for_everyone() {
    let (table, fd) = HintTable::create_with(1024, 4).unwrap();
    let a = Hints::new(table, 0).unwrap();
    assert!(a.alone("/", &rooms(&["r"])));
    // A build of another layout maps the same table.
    header(&a.table.map)[H_LAYOUT].store(LAYOUT + 1, Ordering::SeqCst);
    let err = HintTable::open(&fd).unwrap_err();
    assert!(
        matches!(err, HintError::Layout { found, .. } if found == LAYOUT + 1),
        "{err}"
    );
    assert!(!a.alone("/", &rooms(&["r"])), "the table is disabled");
    assert_eq!(a.reach("/", &rooms(&["r"])), Reach::Primary);
    // The previous layout (counters, no lanes) is another layout too.
    header(&a.table.map)[H_LAYOUT].store(1, Ordering::SeqCst);
    assert!(matches!(
        HintTable::open(&fd),
        Err(HintError::Layout { found: 1, .. })
    ));
    // Not a table at all.
    let (_, other) = HintTable::create_with(4, 4).unwrap();
    let map = Mapping::shared(&other, HEADER_BYTES).unwrap();
    header(&map)[H_MAGIC].store(0, Ordering::SeqCst);
    assert!(matches!(
        HintTable::open(&other),
        Err(HintError::Layout { magic: 0, .. })
    ));
}

#[test]
fn the_primary_reads_the_lanes_of_rooms_or_none_when_anyone_may_have_them() {
    let (table, fd) = HintTable::create_with(1024, 4).unwrap();
    let a = Hints::new(HintTable::open(&fd).unwrap(), 1).unwrap();
    let b = Hints::new(HintTable::open(&fd).unwrap(), 2).unwrap();
    let of = |rooms: &[&str]| {
        table
            .lanes_of("/", rooms)
            .map(|s| s.iter().collect::<Vec<_>>())
    };
    assert_eq!(of(&["r"]), Some(vec![]), "nobody has it");
    a.appeared("/", "r");
    b.appeared("/", "s");
    assert_eq!(of(&["r"]), Some(vec![1]));
    assert!(table.lanes_of("/", &["r"]).unwrap().contains(1));
    assert!(!table.lanes_of("/", &["r"]).unwrap().contains(2));
    assert_eq!(of(&["r", "s", "t"]), Some(vec![1, 2]), "a union");
    assert_eq!(
        table.lanes_of("/other", &["r"]).map(|s| s.is_empty()),
        Some(true)
    );
    a.gone("/", "r");
    assert_eq!(of(&["r"]), Some(vec![]), "gone with its last member");
    // Every socket, a socket's own room (never counted), a forced room, a
    // disabled table: anyone may have members.
    assert_eq!(of(&[]), None);
    let sid = crate::engine::Sid::random().to_string();
    assert_eq!(of(&["s", &sid]), None);
    force(&b, "/", &["f"]);
    assert_eq!(of(&["s", "f"]), None);
    assert_eq!(of(&["s"]), Some(vec![2]));
    table.disable();
    assert_eq!(of(&["s"]), None);
}

#[test]
fn a_process_that_cannot_map_the_table_disables_it_through_its_descriptor() {
    let (table, fd) = HintTable::create(4).unwrap();
    assert!(!table.disabled());
    HintTable::disable_fd(&fd).unwrap();
    assert!(table.disabled(), "the primary's mapping sees it");
    assert!(
        HintTable::open(&fd).unwrap().disabled(),
        "and a new mapping too"
    );
}

#[test]
fn a_worker_s_two_lanes_map_back_to_it() {
    // 3 workers: lanes 0..6, worker w on w and 3 + w.
    for w in 0..3 {
        let lanes = lanes_of_worker(w, 6);
        assert_eq!(lanes, [w, 3 + w]);
        assert!(lanes.iter().all(|&l| worker_of_lane(l, 6) == w));
    }
}
