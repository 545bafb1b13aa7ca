// Transaction smoke check for a broker.sh cluster (run by smoke.sh through Java's source
// launcher, so it needs a JDK):
//   java -cp "$(broker.sh classpath)" tests/kafka/TxSmoke.java BOOTSTRAP IN_TOPIC OUT_TOPIC
// Proves what the mock cluster could not: a read_committed reader sees committed records and
// never aborted ones, and offsets sent in a transaction (exactly-once v2) commit with it.
// Prints one line of timings; exits 1 on any mismatch.

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class TxSmoke {
  static final int RECORDS_PER_TX = 5;
  static final Duration POLL_TIMEOUT = Duration.ofSeconds(30);

  public static void main(String[] args) throws Exception {
    String bootstrap = args[0], in = args[1], out = args[2];
    long t0 = System.nanoTime();
    try (KafkaProducer<String, String> producer = producer(bootstrap, "tx-smoke-" + out)) {
      producer.initTransactions();
      long initMs = (System.nanoTime() - t0) / 1_000_000;

      long t1 = System.nanoTime();
      sendInTx(producer, in, "committed-a", true);
      long firstCommitMs = (System.nanoTime() - t1) / 1_000_000;
      sendInTx(producer, in, "aborted", false);
      sendInTx(producer, in, "committed-b", true);

      List<String> committed = readAll(bootstrap, in, "read_committed");
      List<String> uncommitted = readAll(bootstrap, in, "read_uncommitted");
      check(committed.size() == 2 * RECORDS_PER_TX, "read_committed count " + committed);
      check(committed.stream().noneMatch(v -> v.startsWith("aborted")), "aborted visible " + committed);
      check(uncommitted.stream().anyMatch(v -> v.startsWith("aborted")),
          "aborted records never reached the log " + uncommitted);

      // Exactly-once v2 hop: consume IN in a group, produce to OUT and commit the group's
      // offsets in the same transaction.
      long t2 = System.nanoTime();
      int copied = consumeTransformProduce(bootstrap, producer, in, out);
      long eosMs = (System.nanoTime() - t2) / 1_000_000;
      check(copied == 2 * RECORDS_PER_TX, "copied " + copied);
      check(readAll(bootstrap, out, "read_committed").size() == copied, "OUT count");

      System.out.printf("TxSmoke ok: init_transactions_ms=%d first_commit_ms=%d eos_hop_ms=%d "
              + "read_committed=%d read_uncommitted=%d%n",
          initMs, firstCommitMs, eosMs, committed.size(), uncommitted.size());
    }
  }

  static KafkaProducer<String, String> producer(String bootstrap, String txId) {
    Properties p = new Properties();
    p.put("bootstrap.servers", bootstrap);
    p.put("transactional.id", txId);
    p.put("acks", "all");
    p.put("key.serializer", StringSerializer.class.getName());
    p.put("value.serializer", StringSerializer.class.getName());
    return new KafkaProducer<>(p);
  }

  static KafkaConsumer<String, String> consumer(String bootstrap, String isolation, String group) {
    Properties p = new Properties();
    p.put("bootstrap.servers", bootstrap);
    p.put("isolation.level", isolation);
    p.put("enable.auto.commit", "false");
    p.put("auto.offset.reset", "earliest");
    if (group != null) p.put("group.id", group);
    p.put("key.deserializer", StringDeserializer.class.getName());
    p.put("value.deserializer", StringDeserializer.class.getName());
    return new KafkaConsumer<>(p);
  }

  static void sendInTx(KafkaProducer<String, String> producer, String topic, String prefix,
      boolean commit) throws Exception {
    producer.beginTransaction();
    for (int i = 0; i < RECORDS_PER_TX; i++) {
      producer.send(new ProducerRecord<>(topic, "k" + i, prefix + "-" + i)).get();
    }
    if (commit) producer.commitTransaction(); else producer.abortTransaction();
  }

  // Every record up to the end offset this isolation level can see (the LSO for read_committed).
  static List<String> readAll(String bootstrap, String topic, String isolation) {
    try (KafkaConsumer<String, String> c = consumer(bootstrap, isolation, null)) {
      List<TopicPartition> parts = c.partitionsFor(topic).stream()
          .map(pi -> new TopicPartition(topic, pi.partition())).collect(Collectors.toList());
      c.assign(parts);
      c.seekToBeginning(parts);
      Map<TopicPartition, Long> end = c.endOffsets(parts);
      List<String> values = new ArrayList<>();
      long deadline = System.nanoTime() + POLL_TIMEOUT.toNanos();
      while (parts.stream().anyMatch(tp -> c.position(tp) < end.get(tp))) {
        check(System.nanoTime() < deadline, "timed out reading " + topic);
        for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) values.add(r.value());
      }
      return values;
    }
  }

  static int consumeTransformProduce(String bootstrap, KafkaProducer<String, String> producer,
      String in, String out) throws Exception {
    String group = "tx-smoke-" + out;
    try (KafkaConsumer<String, String> c = consumer(bootstrap, "read_committed", group)) {
      c.subscribe(List.of(in));
      int copied = 0;
      long deadline = System.nanoTime() + POLL_TIMEOUT.toNanos();
      while (copied < 2 * RECORDS_PER_TX) {
        check(System.nanoTime() < deadline, "timed out consuming " + in + " after " + copied);
        var records = c.poll(Duration.ofMillis(200));
        if (records.isEmpty()) continue;
        producer.beginTransaction();
        Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
        for (ConsumerRecord<String, String> r : records) {
          producer.send(new ProducerRecord<>(out, r.key(), r.value().toUpperCase()));
          offsets.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
          copied++;
        }
        producer.sendOffsetsToTransaction(offsets, c.groupMetadata());
        producer.commitTransaction();
      }
      Map<TopicPartition, OffsetAndMetadata> committed = c.committed(c.assignment());
      long total = committed.values().stream().mapToLong(o -> o == null ? 0 : o.offset()).sum();
      // Offsets count the transaction markers too, so they exceed the record count.
      check(total >= copied, "group offsets " + committed + " behind " + copied + " copied records");
      return copied;
    }
  }

  static void check(boolean ok, String what) {
    if (!ok) {
      System.err.println("TxSmoke FAILED: " + what);
      System.exit(1);
    }
  }
}
