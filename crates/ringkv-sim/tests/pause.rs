//! The paused host (`Fault::Pause`, the patch in vendor/turmoil): what a
//! process stopped with SIGSTOP and continued with SIGCONT goes through,
//! checked on turmoil alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use turmoil::net::UdpSocket;

const PORT: u16 = 9000;

/// What the host saw, at simulated time (as turmoil reports it to the host).
#[derive(Debug, Default)]
struct Seen {
    /// Every 100 ms: the host's simulated time and its monotonic clock.
    beats: Vec<(Duration, Instant)>,
    /// When the long timers fired, by the host's clock.
    timers: Vec<(&'static str, Duration)>,
    /// When datagrams arrived, by the host's clock.
    datagrams: Vec<Duration>,
}

fn sim_now() -> Duration {
    turmoil::sim_elapsed().expect("inside the simulation")
}

#[test]
fn a_paused_host_stands_still_and_on_resume_its_clock_jumps_and_every_timer_due_fires_at_once() {
    let mut sim = turmoil::Builder::new()
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(60))
        .build();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let host_seen = seen.clone();
    sim.host("paused", move || {
        let seen = host_seen.clone();
        async move {
            let socket = UdpSocket::bind(("0.0.0.0", PORT)).await?;
            for (name, at) in [("due at 2 s", 2_000), ("due at 4 s", 4_000), ("due at 9 s", 9_000)] {
                let seen = seen.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(Instant::now() + Duration::from_millis(at)).await;
                    seen.lock().unwrap().timers.push((name, sim_now()));
                });
            }
            let receiver = seen.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 16];
                while socket.recv_from(&mut buf).await.is_ok() {
                    receiver.lock().unwrap().datagrams.push(sim_now());
                }
            });
            loop {
                seen.lock().unwrap().beats.push((sim_now(), Instant::now()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    sim.client("sender", async move {
        let socket = UdpSocket::bind(("0.0.0.0", 0)).await?;
        // Into the pause, then after it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        socket.send_to(b"held", ("paused", PORT)).await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        socket.send_to(b"later", ("paused", PORT)).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    });
    let step_until = |sim: &mut turmoil::Sim<'_>, until: Duration| {
        while sim.elapsed() < until {
            sim.step().expect("the simulation runs");
        }
    };
    step_until(&mut sim, Duration::from_secs(1));
    sim.pause("paused");
    let beats_at_pause = seen.lock().unwrap().beats.len();
    step_until(&mut sim, Duration::from_secs(6));
    assert_eq!(seen.lock().unwrap().beats.len(), beats_at_pause, "beats while paused");
    sim.resume("paused");
    while !sim.step().expect("the simulation runs") {}

    let seen = seen.lock().unwrap();
    let near = |a: Duration, b: Duration| a.abs_diff(b) <= Duration::from_millis(5);
    // The next beat came at the resume, 5 s of monotonic time after the
    // last one before the pause.
    let (before, after) = (seen.beats[beats_at_pause - 1], seen.beats[beats_at_pause]);
    assert!(near(after.0, Duration::from_secs(6)), "first beat after the pause at {:?}", after.0);
    assert!(after.1 - before.1 >= Duration::from_millis(4_900), "{before:?} then {after:?}");
    // The timers due in the pause fired together, at its end; the one due
    // after it, on time.
    let at = |name: &str| seen.timers.iter().find(|(n, _)| *n == name).map(|(_, at)| *at).expect(name);
    assert!(near(at("due at 2 s"), Duration::from_secs(6)), "{:?}", seen.timers);
    assert!(near(at("due at 4 s"), Duration::from_secs(6)), "{:?}", seen.timers);
    assert!(near(at("due at 9 s"), Duration::from_secs(9)), "{:?}", seen.timers);
    // The datagram sent into the pause waited for its end.
    assert_eq!(seen.datagrams.len(), 2, "{:?}", seen.datagrams);
    assert!(near(seen.datagrams[0], Duration::from_secs(6)), "{:?}", seen.datagrams);
    let latency = seen.datagrams[1].checked_sub(Duration::from_secs(8));
    assert!(latency.is_some_and(|l| l < Duration::from_millis(200)), "{:?}", seen.datagrams);
    // The host's clock kept with the simulation's: no time counted twice.
    let (last, _) = *seen.beats.last().expect("beats");
    assert!(sim.elapsed().saturating_sub(last) <= Duration::from_millis(101), "{last:?} of {:?}", sim.elapsed());
}
