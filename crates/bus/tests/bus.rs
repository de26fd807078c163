//! Bus tests against a real nats-server on a random port.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{Bus, Delivery, Handler, HandlerError, subjects};
use store::{Commit, Store};
use test_support::{TestNats, eventually, temp_dir};
use tokio_util::sync::CancellationToken;

async fn connect(nats: &TestNats) -> Bus {
    let bus = Bus::connect(nats.url(), "bus-test", Duration::from_secs(10))
        .await
        .unwrap();
    bus.ensure_streams().await.unwrap();
    bus
}

async fn stream_messages(bus: &Bus) -> u64 {
    let mut stream = bus
        .jetstream()
        .get_stream(bus::EVENTS_STREAM)
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test]
async fn a_second_publish_with_the_same_msg_id_is_dropped() {
    let nats = TestNats::start().await;
    let bus = connect(&nats).await;
    let subject = subjects::incident_event("live", "390000", "INC-1", subjects::REPORTED).unwrap();
    let first = bus
        .publish_dedup(subject.clone(), "abc-1", "one".into(), None)
        .await
        .unwrap()
        .await
        .unwrap();
    let second = bus
        .publish_dedup(subject.clone(), "abc-1", "one again".into(), None)
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(
        second.duplicate,
        "JetStream accepted a duplicate Nats-Msg-Id"
    );
    assert_eq!(first.sequence, second.sequence);
    let third = bus
        .publish_dedup(subject, "abc-2", "two".into(), None)
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(!third.duplicate);
    assert_eq!(stream_messages(&bus).await, 2);
}

#[tokio::test]
async fn the_relay_publishes_outbox_events_once_and_empties_the_outbox() {
    let nats = TestNats::start().await;
    let bus = connect(&nats).await;
    let dir = temp_dir("relay-");
    let store = Store::open(dir.path()).unwrap();
    for i in 0..50 {
        let mut commit = Commit::new();
        commit.put(format!("incident/live/INC-{i}"), &i).unwrap();
        commit.event(
            subjects::incident_event("live", "390000", &format!("INC-{i}"), subjects::REPORTED)
                .unwrap(),
            vec![i as u8],
        );
        store.commit(&commit).unwrap();
    }
    // Publishing the same outbox twice (as after a crash before removal) must not duplicate.
    let pending = store.outbox_pending(usize::MAX).unwrap();
    for event in &pending[..10] {
        bus.publish_dedup(
            event.subject.clone(),
            &event.msg_id,
            event.payload.clone().into(),
            None,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(bus::run_relay(store.clone(), bus.clone(), shutdown.clone()));
    eventually("outbox empty", Duration::from_secs(10), || async {
        (store.outbox_len() == 0).then_some(())
    })
    .await;
    assert_eq!(stream_messages(&bus).await, 50);
    shutdown.cancel();
    relay.await.unwrap();
}

/// Counts handled messages in the store: the effect whose duplication we must rule out.
struct Counter {
    store: Store,
    calls: Arc<Mutex<u32>>,
}

impl Handler for Counter {
    fn handle(&mut self, delivery: &Delivery) -> Result<Commit, HandlerError> {
        *self.calls.lock().unwrap() += 1;
        let key = format!("count/{}", delivery.subject);
        let count: u64 = self
            .store
            .get(&key)
            .map_err(|e| HandlerError::Retry(e.to_string()))?
            .unwrap_or(0);
        let mut commit = Commit::new();
        commit
            .put(key, &(count + 1))
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        Ok(commit)
    }
}

/// Runs `handler` on `consumer` until the server has every message up to stream sequence `floor`
/// acknowledged and none pending, then stops it.
async fn consume_until_acked<H: Handler>(
    bus: &Bus,
    consumer: async_nats::jetstream::consumer::PullConsumer,
    store: &Store,
    handler: H,
    floor: u64,
) {
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(bus::run_consumer(
        "test-consumer",
        bus.clone(),
        consumer.clone(),
        store.clone(),
        handler,
        shutdown.clone(),
    ));
    eventually(
        "every message acknowledged",
        Duration::from_secs(20),
        || {
            let mut consumer = consumer.clone();
            async move {
                let info = consumer.info().await.ok()?;
                (info.num_ack_pending == 0
                    && info.num_pending == 0
                    && info.ack_floor.stream_sequence >= floor)
                    .then_some(())
            }
        },
    )
    .await;
    shutdown.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn a_message_redelivered_after_a_crash_before_the_ack_is_processed_once() {
    let nats = TestNats::start().await;
    let bus = connect(&nats).await;
    let subject = subjects::incident_event("live", "390000", "INC-9", subjects::REPORTED).unwrap();
    bus.publish_dedup(subject.clone(), "evt-9", "x".into(), None)
        .await
        .unwrap()
        .await
        .unwrap();
    let dir = temp_dir("consumer-");
    let store = Store::open(dir.path()).unwrap();

    // First life: take the message and commit its effect, then "crash" before the ack by dropping
    // the connection without acknowledging.
    {
        let crashed = Bus::connect(nats.url(), "crashing", Duration::from_secs(5))
            .await
            .unwrap();
        // The same consumer as durable_consumer() makes, with a 1 s ack_wait so the test need not
        // wait out the default 30 s before the redelivery.
        let stream = crashed
            .jetstream()
            .get_stream(bus::EVENTS_STREAM)
            .await
            .unwrap();
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("counter".into()),
                filter_subjects: vec![subjects::incident_event_filter("live", "reported")],
                ack_wait: Duration::from_secs(1),
                ..Default::default()
            })
            .await
            .unwrap();
        let info = consumer.info().await.unwrap().clone();
        assert_eq!(info.num_pending, 1);
        use futures_util::StreamExt;
        let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
        let message = batch.next().await.unwrap().unwrap();
        let mut handler = Counter {
            store: store.clone(),
            calls: Arc::default(),
        };
        let delivery = Delivery {
            subject: message.subject.to_string(),
            msg_id: "evt-9".into(),
            payload: message.payload.clone(),
            delivered: 1,
        };
        let mut commit = handler.handle(&delivery).unwrap();
        commit.processed("evt-9");
        store.commit(&commit).unwrap();
        store.flush().await.unwrap();
        drop(message);
        drop(crashed);
    }
    assert_eq!(
        store.get::<u64>(&format!("count/{subject}")).unwrap(),
        Some(1)
    );

    // Second life: the server redelivers after ack_wait; the consumer must skip it and ack it.
    let stream = bus
        .jetstream()
        .get_stream(bus::EVENTS_STREAM)
        .await
        .unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("counter").await.unwrap();
    let calls = Arc::new(Mutex::new(0));
    let counter = Counter {
        store: store.clone(),
        calls: calls.clone(),
    };
    consume_until_acked(&bus, consumer, &store, counter, 1).await;
    assert_eq!(
        store.get::<u64>(&format!("count/{subject}")).unwrap(),
        Some(1),
        "effect applied twice"
    );
    assert_eq!(
        *calls.lock().unwrap(),
        0,
        "the handler ran again for a processed message"
    );
}

#[tokio::test]
async fn a_poison_message_is_terminated_not_redelivered_forever() {
    struct Refuses;
    impl Handler for Refuses {
        fn handle(&mut self, _delivery: &Delivery) -> Result<Commit, HandlerError> {
            Err(HandlerError::Poison("undecodable".into()))
        }
    }
    let nats = TestNats::start().await;
    let bus = connect(&nats).await;
    let subject = subjects::incident_event("live", "390000", "INC-5", subjects::GRADED).unwrap();
    bus.publish_dedup(subject, "bad-1", "garbage".into(), None)
        .await
        .unwrap()
        .await
        .unwrap();
    let dir = temp_dir("poison-");
    let store = Store::open(dir.path()).unwrap();
    let consumer = bus
        .durable_consumer(
            "refuser",
            vec![subjects::incident_event_filter("live", "graded")],
        )
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(bus::run_consumer(
        "refuser",
        bus.clone(),
        consumer.clone(),
        store.clone(),
        Refuses,
        shutdown.clone(),
    ));
    eventually("poison message terminated", Duration::from_secs(10), || {
        let mut consumer = consumer.clone();
        async move {
            let info = consumer.info().await.ok()?;
            (info.num_ack_pending == 0
                && info.num_pending == 0
                && info.delivered.consumer_sequence >= 1)
                .then_some(())
        }
    })
    .await;
    assert!(store.is_processed("bad-1").unwrap());
    shutdown.cancel();
    running.await.unwrap();
}

#[test]
fn stream_replicas_are_a_whole_number_from_1_to_5_with_a_clear_error_otherwise() {
    assert_eq!(bus::parse_stream_replicas("1").unwrap(), 1);
    assert_eq!(bus::parse_stream_replicas(" 3 ").unwrap(), 3);
    assert_eq!(bus::parse_stream_replicas("5").unwrap(), 5);
    for bad in ["0", "6", "-1", "three", "2.5"] {
        let message = bus::parse_stream_replicas(bad).unwrap_err().to_string();
        assert!(
            message.contains("MUSTER_STREAM_REPLICAS") && message.contains("from 1 to 5"),
            "{bad}: {message}"
        );
    }
}

#[tokio::test]
async fn a_list_of_servers_connects_to_one_that_answers() {
    let nats = TestNats::start().await;
    // The first node is down (nothing listens on port 1); the second answers.
    let url = format!("nats://127.0.0.1:1, {}", nats.url());
    let bus = Bus::connect(&url, "bus-test", Duration::from_secs(10))
        .await
        .expect("connects through the node that is up");
    bus.ensure_streams().await.unwrap();
    assert_eq!(
        bus::redact_password("nats://a:secret@h1:4222,nats://a:secret@h2:4222"),
        "nats://a:***@h1:4222,nats://a:***@h2:4222"
    );
    let error = Bus::connect("nats://h1:4222,::bad::", "bus-test", Duration::from_secs(1))
        .await
        .err()
        .expect("a bad URL in the list is refused");
    assert!(error.to_string().contains("not a NATS URL"), "{error}");
}

/// The `Nats-Msg-Id`s of the event stream's messages, in stream order.
async fn stored_msg_ids(bus: &Bus) -> Vec<String> {
    let stream = bus
        .jetstream()
        .get_stream(bus::EVENTS_STREAM)
        .await
        .unwrap();
    let last = stream_messages(bus).await;
    let mut ids = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.unwrap();
        ids.push(
            message
                .headers
                .get(bus::async_nats::header::NATS_MESSAGE_ID)
                .map(|value| value.as_str().to_string())
                .unwrap_or_default(),
        );
    }
    ids
}

/// One batch event per id on `subject`, the id as payload.
fn batch_of<'a>(
    subject: &'a str,
    ids: &'a [String],
    traceparent: Option<&'a str>,
) -> Vec<bus::BatchEvent<'a>> {
    ids.iter()
        .map(|id| bus::BatchEvent {
            subject,
            msg_id: id,
            payload: id.clone().into(),
            traceparent,
        })
        .collect()
}

#[tokio::test]
async fn an_atomic_batch_stores_every_event_in_order_or_none_when_one_is_a_duplicate() {
    let nats = TestNats::start().await;
    let bus = connect(&nats).await;
    assert!(
        bus.atomic_batches(),
        "the event stream takes atomic batches"
    );
    let subject = subjects::incident_event("live", "390000", "INC-1", subjects::UPDATED).unwrap();
    let ids: Vec<String> = (0..300).map(|i| format!("batch-{i}")).collect();
    let events = batch_of(
        &subject,
        &ids,
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    );
    bus.publish_batch(&events).await.unwrap();
    assert_eq!(stored_msg_ids(&bus).await, ids);

    // One event JetStream already has: the whole batch is refused and nothing more is stored.
    let again: Vec<String> = vec!["fresh-1".into(), "batch-7".into(), "fresh-2".into()];
    let events = batch_of(&subject, &again, None);
    let refused = bus.publish_batch(&events).await.unwrap_err();
    assert!(
        matches!(refused, bus::BatchError::Duplicate),
        "expected a duplicate refusal, got {refused}"
    );
    assert_eq!(stream_messages(&bus).await, 300);

    let too_many: Vec<String> = (0..bus::BATCH_LEN_MAX + 1)
        .map(|i| format!("x-{i}"))
        .collect();
    let events = batch_of(&subject, &too_many, None);
    let refused = bus.publish_batch(&events).await.unwrap_err();
    assert!(
        refused.to_string().contains("at most 1000 events"),
        "{refused}"
    );
    assert_eq!(stream_messages(&bus).await, 300);
}

#[tokio::test]
async fn a_stream_created_without_atomic_batches_is_updated_to_take_them() {
    let nats = TestNats::start().await;
    let client = bus::async_nats::connect(nats.url()).await.unwrap();
    let jetstream = bus::async_nats::jetstream::new(client);
    // As an earlier Muster created it.
    jetstream
        .create_stream(bus::async_nats::jetstream::stream::Config {
            name: bus::EVENTS_STREAM.to_string(),
            subjects: vec!["muster.live.>".into(), "muster.drill.>".into()],
            duplicate_window: bus::DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .unwrap();
    let bus = connect(&nats).await;
    assert!(bus.atomic_batches());
    let mut stream = jetstream.get_stream(bus::EVENTS_STREAM).await.unwrap();
    assert!(stream.info().await.unwrap().config.allow_atomic_publish);
}

#[tokio::test]
async fn the_relay_sends_a_round_as_one_batch_in_outbox_order() {
    let nats = TestNats::start().await;
    let bus = connect(&nats).await;
    let dir = temp_dir("relay-batch-");
    let store = Store::open(dir.path()).unwrap();
    commit_reported(&store, 0..700);
    let expected: Vec<String> = store
        .outbox_pending(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|event| event.msg_id)
        .collect();
    // Two rounds: the relay's round is at most RELAY_BATCH_LEN_MAX events.
    let first = bus::relay::relay_once(&store, &bus).await.unwrap();
    assert_eq!(first, bus::relay::RELAY_BATCH_LEN_MAX);
    let second = bus::relay::relay_once(&store, &bus).await.unwrap();
    assert_eq!(first + second, 700);
    assert_eq!(store.outbox_len(), 0);
    assert_eq!(stored_msg_ids(&bus).await, expected);
}

/// One commit per incident `INC-<i>` with its `reported` event (payload: `i`), for the relay.
fn commit_reported(store: &Store, incidents: std::ops::Range<u32>) {
    for i in incidents {
        let mut commit = Commit::new();
        commit.event(
            subjects::incident_event("live", "390000", &format!("INC-{i}"), subjects::REPORTED)
                .unwrap(),
            i.to_be_bytes().to_vec(),
        );
        store.commit(&commit).unwrap();
    }
}

/// Whether the event stream's message `sequence` went in as part of an atomic batch.
async fn stored_in_a_batch(bus: &Bus, sequence: u64) -> bool {
    let stream = bus
        .jetstream()
        .get_stream(bus::EVENTS_STREAM)
        .await
        .unwrap();
    let message = stream.get_raw_message(sequence).await.unwrap();
    message.headers.get("Nats-Batch-Id").is_some()
}

#[tokio::test]
async fn a_round_smaller_than_a_batch_is_sent_one_event_at_a_time_in_outbox_order() {
    let nats = TestNats::start().await;
    let bus = connect(&nats).await;
    let dir = temp_dir("relay-small-");
    let store = Store::open(dir.path()).unwrap();
    let small = bus::relay::ATOMIC_BATCH_MIN - 1;
    commit_reported(&store, 0..small as u32);
    let mut expected: Vec<String> = store
        .outbox_pending(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|event| event.msg_id)
        .collect();
    assert_eq!(bus::relay::relay_once(&store, &bus).await.unwrap(), small);
    assert_eq!(store.outbox_len(), 0);
    assert_eq!(stored_msg_ids(&bus).await, expected);

    // A round of ATOMIC_BATCH_MIN goes as one batch.
    commit_reported(
        &store,
        small as u32..(small + bus::relay::ATOMIC_BATCH_MIN) as u32,
    );
    expected.extend(
        store
            .outbox_pending(usize::MAX)
            .unwrap()
            .into_iter()
            .map(|event| event.msg_id),
    );
    assert_eq!(
        bus::relay::relay_once(&store, &bus).await.unwrap(),
        bus::relay::ATOMIC_BATCH_MIN
    );
    assert_eq!(stored_msg_ids(&bus).await, expected);
    for sequence in 1..=expected.len() as u64 {
        assert_eq!(
            stored_in_a_batch(&bus, sequence).await,
            sequence > small as u64,
            "message {sequence}: the first {small} went one at a time, the rest as a batch"
        );
    }
}

/// Takes its time over each message, as a consumer with a backlog does.
struct Slow {
    handled: Arc<std::sync::atomic::AtomicUsize>,
}

impl Handler for Slow {
    fn handle(&mut self, delivery: &Delivery) -> Result<Commit, HandlerError> {
        std::thread::sleep(Duration::from_millis(5));
        self.handled
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut commit = Commit::new();
        commit
            .put(format!("seen/{}", delivery.msg_id), &1u8)
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        Ok(commit)
    }
}

#[tokio::test]
async fn a_consumer_told_to_stop_with_a_backlog_stops_even_when_nats_is_gone() {
    let mut nats = TestNats::start().await;
    let bus = connect(&nats).await;
    let subject = subjects::incident_event("live", "390000", "INC-1", subjects::UPDATED).unwrap();
    let ids: Vec<String> = (0..600).map(|i| format!("backlog-{i}")).collect();
    for chunk in ids.chunks(200) {
        bus.publish_batch(&batch_of(&subject, chunk, None))
            .await
            .unwrap();
    }
    let dir = temp_dir("backlog-");
    let store = Store::open(dir.path()).unwrap();
    let consumer = bus
        .durable_consumer(
            "slow",
            vec![subjects::incident_event_filter("live", "updated")],
        )
        .await
        .unwrap();
    let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(bus::run_consumer_owned(
        "slow".into(),
        bus.clone(),
        consumer,
        store.clone(),
        Slow {
            handled: handled.clone(),
        },
        shutdown.clone(),
    ));
    eventually("the consumer is working", Duration::from_secs(20), || {
        let handled = handled.clone();
        async move { (handled.load(std::sync::atomic::Ordering::SeqCst) >= 20).then_some(()) }
    })
    .await;
    nats.kill().await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the consumer did not stop within 30 s of being told to, with NATS gone")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), bus.flush())
        .await
        .expect("Bus::flush waited for NATS forever");
    // What it committed is durable (its group was finished and flushed before it stopped).
    assert!(handled.load(std::sync::atomic::Ordering::SeqCst) < 600);
}

/// Counts messages per incident like [`Counter`], but in runs (`Handler::begin_run`): it keeps the
/// counts its run's commits write and reads them back, as intake's projection does.
///
/// - A `closed` message of an incident the run already counted asks for the run to be applied
///   first (`None`), as the projection does when it folds a closed incident's history.
/// - Its first run expects the key `fence` to be absent; the test writes it, so that run's
///   commit conflicts and its messages must be handled again one by one (which read the store).
#[derive(Default)]
struct RunCounter {
    store: Option<Store>,
    run: Option<std::collections::HashMap<String, u64>>,
    runs: Arc<Mutex<Vec<usize>>>,
    after_run: Arc<Mutex<u32>>,
    alone: Arc<Mutex<u32>>,
}

impl RunCounter {
    fn count(&mut self, delivery: &Delivery) -> Result<Option<Commit>, HandlerError> {
        if delivery.msg_id == "poison" {
            return Err(HandlerError::Poison("undecodable".into()));
        }
        let store = self.store.as_ref().unwrap();
        let key = format!("count/{}", delivery.subject.rsplit_once('.').unwrap().0);
        let in_run = self.run.as_ref().and_then(|run| run.get(&key)).copied();
        if delivery.subject.ends_with(".closed") && in_run.is_some() {
            *self.after_run.lock().unwrap() += 1;
            return Ok(None);
        }
        let count = match in_run {
            Some(count) => count,
            None => store
                .get::<u64>(&key)
                .map_err(|e| HandlerError::Retry(e.to_string()))?
                .unwrap_or(0),
        };
        let mut commit = Commit::new();
        let raw = store.get_raw(&key).unwrap();
        // The run's first commit to the key expects what the store holds; absorb drops the rest.
        commit.expect_raw(key.clone(), raw);
        commit
            .put(key.clone(), &(count + 1))
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        if let Some(run) = &mut self.run {
            if self.runs.lock().unwrap().len() == 1 {
                commit.expect_raw("fence", None);
            }
            run.insert(key, count + 1);
            *self.runs.lock().unwrap().last_mut().unwrap() += 1;
        }
        Ok(Some(commit))
    }
}

impl Handler for RunCounter {
    fn handle(&mut self, delivery: &Delivery) -> Result<Commit, HandlerError> {
        *self.alone.lock().unwrap() += 1;
        self.run = None;
        Ok(self.count(delivery)?.unwrap())
    }

    fn begin_run(&mut self) -> bool {
        self.run = Some(Default::default());
        self.runs.lock().unwrap().push(0);
        true
    }

    fn handle_in_run(&mut self, delivery: &Delivery) -> Result<Option<Commit>, HandlerError> {
        self.count(delivery)
    }

    fn end_run(&mut self) {
        self.run = None;
    }
}

#[tokio::test]
async fn a_run_of_messages_is_committed_as_one_and_counts_each_message_once() {
    let nats = TestNats::start().await;
    let bus = connect(&nats).await;
    let dir = temp_dir("runs-");
    let store = Store::open(dir.path()).unwrap();
    // The first run's commit conflicts on this key (see RunCounter).
    let mut fence = Commit::new();
    fence.put("fence", &1u8).unwrap();
    store.commit(&fence).unwrap();
    // 3 incidents × 40 events, interleaved; every 10th event of an incident is `closed`.
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..120u32 {
        let incident = format!("INC-{}", i % 3);
        let kind = if (i / 3) % 10 == 9 {
            subjects::CLOSED
        } else {
            subjects::REPORTED
        };
        let subject = subjects::incident_event("live", "390000", &incident, kind).unwrap();
        bus.publish_dedup(subject.clone(), &format!("evt-{i}"), "x".into(), None)
            .await
            .unwrap()
            .await
            .unwrap();
        let key = format!("count/{}", subject.rsplit_once('.').unwrap().0);
        *expected.entry(key).or_insert(0u64) += 1;
    }
    // A poison message in the middle of a run is recorded as processed with the run.
    let graded = subjects::incident_event("live", "390000", "INC-0", subjects::GRADED).unwrap();
    bus.publish_dedup(graded, "poison", "x".into(), None)
        .await
        .unwrap()
        .await
        .unwrap();
    let consumer = bus
        .durable_consumer(
            "run-counter",
            vec![subjects::incident_event_filter("live", "*")],
        )
        .await
        .unwrap();
    let handler = RunCounter {
        store: Some(store.clone()),
        ..Default::default()
    };
    let (runs, after_run, alone) = (
        handler.runs.clone(),
        handler.after_run.clone(),
        handler.alone.clone(),
    );
    consume_until_acked(&bus, consumer, &store, handler, 121).await;

    for (key, count) in &expected {
        assert_eq!(store.get::<u64>(key).unwrap(), Some(*count), "{key}");
    }
    for i in 0..120 {
        assert!(store.is_processed(&format!("evt-{i}")).unwrap(), "evt-{i}");
    }
    assert!(store.is_processed("poison").unwrap());
    let runs = runs.lock().unwrap().clone();
    assert!(
        runs.iter().any(|&messages| messages > 10),
        "no run held more than 10 messages: {runs:?}"
    );
    // The conflicting first run was handled again one message at a time.
    assert!(
        runs[0] > 0 && *alone.lock().unwrap() >= runs[0] as u32,
        "{runs:?}"
    );
    assert!(
        *after_run.lock().unwrap() > 0,
        "no `closed` message waited for its run"
    );
}
