// The Kafka Streams baseline of bench/kafka_bench.cc: the same workload (a linear workflow of
// --steps task steps, --partitions partitions, --tenants tenants spread evenly over them, a
// closed loop of --in-flight executions), the same acker (a plain idempotent producer acking
// every command with Success, per partition), the same latency (when the acker reads an
// execution's next command − when the ack of its previous command was flushed) and the same
// window (opens once the initial starts are processed and --warmup-s passed, lasts --seconds).
// The orchestrator is a Kafka Streams application: exactly_once_v2, one persistent RocksDB
// store keyed by execution, commit.interval.ms from --commit-interval-ms.
//
// It runs against a broker it is given (--bootstrap), creates its topics under a unique prefix
// and stops by itself. The correspondence with kafka_bench.cc, line by line: README.md beside
// pom.xml. Results and the alternating script: bench/KAFKA.md, bench/kafka_vs_streams.py.
package dev.auterity.bench;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Utils;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

public final class KStreamsBench {
  // ----------------------------------------------------------------------------- settings

  static final class Flags {
    String bootstrap = "";
    int partitions = 2;
    int steps = 10;
    int executions = 0; // 0: as many as the window takes (closed loop, time-bounded)
    int inFlight = 1000;
    int tenants = 2;
    int ackBatch = 1024; // commands acked per acker flush, max
    long commitIntervalMs = 100; // Kafka Streams' default under exactly-once
    int threads = 2; // num.stream.threads: one per partition, as the engine's runtimes
    String guarantee = "exactly_once_v2";
    int warmupS = 10;
    int seconds = 15;
    int timeoutS = 120;
    int[] brokerPids = new int[0]; // for the CPU split
    String dir = System.getProperty("java.io.tmpdir");
    boolean json = false;
    // Extra StreamsConfig entries (--streams-prop KEY=VALUE; "consumer."/"producer." prefixes
    // reach the clients), applied last.
    Map<String, String> streamsProps = new java.util.LinkedHashMap<>();
  }

  static final int EXECUTIONS_UNBOUNDED = 2_000_000; // index space of a time-bounded run
  static final long SAMPLE_INTERVAL_MS = 10;
  static final long DRAIN_TIMEOUT_MS = 20_000; // after the ackers stop, for Streams to catch up
  static final long WATCHDOG_SLACK_S = 120; // topics, JVM, Streams start and close
  static final Duration ACKER_POLL = Duration.ofMillis(10);
  static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(30);

  static long nowNs() {
    return System.nanoTime();
  }

  static double ratio(double a, double b) {
    return b > 0 ? a / b : 0;
  }

  // ----------------------------------------------------------------------------- workload

  // Topic names under the run's prefix; every topic has --partitions partitions.
  record Topics(String ingress, String acks, String commands, String events) {
    static Topics of(String prefix) {
      return new Topics(
          prefix + "ingress", prefix + "acks", prefix + "commands.step", prefix + "events");
    }

    List<String> all() {
      return List.of(ingress, acks, commands, events);
    }
  }

  // The producer's default partitioner for a String key: the partition of a tenant.
  static int tenantPartition(String tenant, int partitions) {
    return Utils.toPositive(Utils.murmur2(tenant.getBytes(StandardCharsets.UTF_8))) % partitions;
  }

  // bench_common.cc pick_tenants: candidate names in order, kept while their partition needs one.
  static List<String> pickTenants(int wanted, int partitions) {
    int perPartition = Math.max(1, (wanted + partitions - 1) / partitions);
    int[] have = new int[partitions];
    List<String> out = new ArrayList<>();
    for (int i = 0; out.size() < perPartition * partitions; ++i) {
      String name = "dealer-" + i;
      int p = tenantPartition(name, partitions);
      if (have[p] == perPartition) continue;
      ++have[p];
      out.add(name);
    }
    return out;
  }

  // bench_common.h workload: execution i belongs to tenant i % tenants.
  static final class Workload {
    final int executions;
    final int inFlight;
    final int lastStep;
    final List<String> tenants;
    final AtomicInteger nextIndex = new AtomicInteger();

    Workload(int executions, int inFlight, int steps, List<String> tenants) {
      this.executions = executions;
      this.inFlight = inFlight;
      this.lastStep = steps - 1;
      this.tenants = tenants;
    }

    int takeIndex() { // -1 once every execution was started
      int i = nextIndex.getAndIncrement();
      return i < executions ? i : -1;
    }

    String tenantOf(int index) {
      return tenants.get(index % tenants.size());
    }
  }

  // Record values (keys are the tenant, so the default partitioner keeps a tenant on one
  // partition of every topic):
  //   ingress   start|x<i>|<n>               StartExecution, input {"n": n}
  //   acks      ack|x<i>|<step>|{}          Success of step <step>, output {}
  //   commands  run|x<i>|<step>|{"n":<n>}    RunStep with the rendered input
  //   events    <Event>|x<i>|<step>          the execution's history
  static String startCommand(int index) {
    return "start|x" + index + "|" + index;
  }

  // ------------------------------------------------------------------------- orchestrator

  // Counters of every processor instance (the engine's orchestrator_probe).
  static final AtomicLong transitions = new AtomicLong(); // acks that moved a step
  static final AtomicLong started = new AtomicLong();
  static final AtomicLong ended = new AtomicLong();
  static final AtomicLong staleAcks = new AtomicLong();
  static final AtomicLong rejections = new AtomicLong(); // undecodable or duplicate inputs

  static final String STORE = "executions";

  // The engine's orchestrator reduced to this workflow: StartExecution schedules step 0; the
  // ack of step k schedules step k+1 or ends the execution. The state of an execution (its
  // input and current step) lives in a persistent RocksDB store keyed by execution id.
  static final class Orchestrator implements Processor<String, String, String, String> {
    private final int lastStep;
    private ProcessorContext<String, String> context;
    private KeyValueStore<String, String> store;

    Orchestrator(int lastStep) {
      this.lastStep = lastStep;
    }

    @Override
    public void init(ProcessorContext<String, String> context) {
      this.context = context;
      this.store = context.getStateStore(STORE);
    }

    @Override
    public void process(Record<String, String> r) {
      String[] f = r.value().split("\\|", 4);
      if (f.length >= 3 && f[0].equals("start")) {
        start(r, f[1], f[2]);
      } else if (f.length == 4 && f[0].equals("ack")) {
        ack(r, f[1], Integer.parseInt(f[2]));
      } else {
        rejections.incrementAndGet();
      }
    }

    private void start(Record<String, String> r, String id, String n) {
      if (store.get(id) != null) {
        rejections.incrementAndGet();
        return;
      }
      store.put(id, n + "|0");
      emit(r, "events", "ExecutionStarted|" + id + "|-");
      schedule(r, id, n, 0);
      started.incrementAndGet();
    }

    private void ack(Record<String, String> r, String id, int step) {
      String state = store.get(id);
      if (state == null) {
        staleAcks.incrementAndGet();
        return;
      }
      int bar = state.indexOf('|');
      String n = state.substring(0, bar);
      if (Integer.parseInt(state.substring(bar + 1)) != step) {
        staleAcks.incrementAndGet();
        return;
      }
      emit(r, "events", "StepSucceeded|" + id + "|" + step);
      transitions.incrementAndGet();
      if (step == lastStep) {
        emit(r, "events", "ExecutionSucceeded|" + id + "|-");
        store.delete(id);
        ended.incrementAndGet();
        return;
      }
      store.put(id, n + "|" + (step + 1));
      schedule(r, id, n, step + 1);
    }

    private void schedule(Record<String, String> r, String id, String n, int step) {
      emit(r, "events", "StepScheduled|" + id + "|" + step);
      emit(r, "commands", "run|" + id + "|" + step + "|{\"n\":" + n + "}");
    }

    private void emit(Record<String, String> r, String sink, String value) {
      context.forward(r.withValue(value), sink);
    }
  }

  static Topology topology(Topics t, int lastStep) {
    var s = Serdes.String();
    Topology top = new Topology();
    top.addSource("ingress", s.deserializer(), s.deserializer(), t.ingress());
    top.addSource("acks", s.deserializer(), s.deserializer(), t.acks());
    top.addProcessor("orchestrator", () -> new Orchestrator(lastStep), "ingress", "acks");
    top.addStateStore(
        Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(STORE), s, s), "orchestrator");
    top.addSink("commands", t.commands(), s.serializer(), s.serializer(), "orchestrator");
    top.addSink("events", t.events(), s.serializer(), s.serializer(), "orchestrator");
    return top;
  }

  // -------------------------------------------------------------------------------- acker

  // kafka_bench.cc make_producer + idempotent_sink: acks=all, idempotent, linger 1 ms.
  static KafkaProducer<String, String> idempotentProducer(String bootstrap, String id) {
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ProducerConfig.CLIENT_ID_CONFIG, id);
    p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
    p.put(ProducerConfig.ACKS_CONFIG, "all");
    p.put(ProducerConfig.LINGER_MS_CONFIG, "1");
    p.put(ProducerConfig.RETRY_BACKOFF_MS_CONFIG, "5");
    return new KafkaProducer<>(p, new StringSerializer(), new StringSerializer());
  }

  // The engine's kafka_log reader settings (engine/kafka_log.cc): read_committed, fetch wait
  // at most 10 ms.
  static KafkaConsumer<String, String> committedReader(String bootstrap, String id, int batch) {
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.CLIENT_ID_CONFIG, id);
    p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "10");
    p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, Integer.toString(batch));
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    return new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer());
  }

  // Plays the connector worker for one partition (kafka_bench.cc acker + bench_common.cc
  // ack_writer): reads commands.step[p], acks each command with Success, starts the next
  // execution of the tenant when an execution's last step is acked, and flushes the idempotent
  // producer until the broker acknowledged everything; then stamps those executions' ack time.
  static final class Acker implements Runnable {
    final int partition;
    final Workload w;
    final long[] ackCommitNs; // by execution index; each index has one owner
    final KafkaConsumer<String, String> reader;
    final KafkaProducer<String, String> sink;
    final Topics topics;
    final AtomicBoolean stop = new AtomicBoolean();
    final AtomicLong commits = new AtomicLong();
    final AtomicLong acks = new AtomicLong();
    final AtomicLong records = new AtomicLong();
    final AtomicLong commitUs = new AtomicLong();
    final AtomicReference<Exception> failure = new AtomicReference<>();
    long[] sampleReadNs = new long[1 << 16]; // latency samples (read time, latency)
    long[] sampleNs = new long[1 << 16];
    int samples = 0;
    private final Thread thread;
    private final int[] indexes;

    Acker(Flags f, Topics t, int partition, Workload w, long[] ackCommitNs) {
      this.partition = partition;
      this.w = w;
      this.ackCommitNs = ackCommitNs;
      this.topics = t;
      this.reader = committedReader(f.bootstrap, "bench-acker-" + partition, f.ackBatch);
      this.sink = idempotentProducer(f.bootstrap, "bench-acker-sink-" + partition);
      this.indexes = new int[f.ackBatch];
      reader.assign(List.of(new TopicPartition(t.commands(), partition)));
      reader.seekToBeginning(List.of(new TopicPartition(t.commands(), partition)));
      this.thread = new Thread(this, "bench-acker");
    }

    void start() {
      thread.start();
    }

    void stopAndJoin() throws InterruptedException {
      stop.set(true);
      thread.join();
      reader.close();
      sink.close(CLOSE_TIMEOUT);
    }

    @Override
    public void run() {
      try {
        while (!stop.get()) serve();
      } catch (Exception e) {
        failure.set(e);
      }
    }

    private void serve() throws InterruptedException, ExecutionException {
      ConsumerRecords<String, String> rs = reader.poll(ACKER_POLL);
      if (rs.isEmpty()) return;
      long readNs = nowNs();
      int n = 0;
      List<java.util.concurrent.Future<?>> sent = new ArrayList<>();
      int produced = 0;
      for (ConsumerRecord<String, String> r : rs) {
        String[] f = r.value().split("\\|", 4);
        int index = Integer.parseInt(f[1].substring(1));
        int step = Integer.parseInt(f[2]);
        long acked = ackCommitNs[index];
        if (acked != 0) addSample(readNs, readNs - acked);
        indexes[n++] = index;
        String tenant = r.key();
        sent.add(sink.send(new ProducerRecord<>(topics.acks(), partition, tenant,
            "ack|x" + index + "|" + step + "|{}")));
        ++produced;
        if (step == w.lastStep && w.inFlight != w.executions) {
          int next = w.takeIndex();
          if (next >= 0) {
            sent.add(sink.send(new ProducerRecord<>(topics.ingress(), partition, tenant,
                startCommand(next))));
            ++produced;
          }
        }
      }
      sink.flush();
      for (var s : sent) s.get(); // a failed delivery fails the run
      long committedNs = nowNs();
      for (int i = 0; i < n; ++i) ackCommitNs[indexes[i]] = committedNs;
      commits.incrementAndGet();
      acks.addAndGet(n);
      records.addAndGet(produced);
      commitUs.addAndGet((committedNs - readNs) / 1000);
    }

    private void addSample(long readNs, long latencyNs) {
      if (samples == sampleNs.length) {
        sampleNs = Arrays.copyOf(sampleNs, samples * 2);
        sampleReadNs = Arrays.copyOf(sampleReadNs, samples * 2);
      }
      sampleReadNs[samples] = readNs;
      sampleNs[samples++] = latencyNs;
    }
  }

  // ----------------------------------------------------------------------------- sampling

  // bench_common.h totals.
  record Totals(long atNs, long transitions, long started, long ended, long staleAcks,
      long rejections, long ackerCommits, long acks, long ackerRecords, long ackerCommitUs,
      double streamsCommits, double txnCommitNs) {}

  static Totals readTotals(List<Acker> ackers, KafkaStreams streams) {
    long commits = 0, nAcks = 0, recs = 0, us = 0;
    for (Acker a : ackers) {
      commits += a.commits.get();
      nAcks += a.acks.get();
      recs += a.records.get();
      us += a.commitUs.get();
    }
    double streamCommits = 0, txnNs = 0;
    if (streams != null) {
      for (Map.Entry<MetricName, ? extends Metric> m : streams.metrics().entrySet()) {
        MetricName name = m.getKey();
        if (name.group().equals("stream-thread-metrics") && name.name().equals("commit-total")) {
          streamCommits += ((Number) m.getValue().metricValue()).doubleValue();
        }
        if (name.group().equals("producer-metrics")
            && name.name().equals("txn-commit-time-ns-total")) {
          txnNs += ((Number) m.getValue().metricValue()).doubleValue();
        }
      }
    }
    return new Totals(nowNs(), transitions.get(), started.get(), ended.get(), staleAcks.get(),
        rejections.get(), commits, nAcks, recs, us, streamCommits, txnNs);
  }

  // CPU time in USER_HZ ticks: a process's utime + stime, and the machine's busy time
  // (bench_common.cc machine_busy_ticks: user + nice + system + irq + softirq + steal).
  static long processTicks(int pid) {
    try {
      String s = Files.readString(Path.of("/proc/" + (pid == 0 ? "self" : pid) + "/stat"));
      String[] f = s.substring(s.lastIndexOf(')') + 2).split(" ");
      return Long.parseLong(f[11]) + Long.parseLong(f[12]);
    } catch (IOException | RuntimeException e) {
      return 0;
    }
  }

  static long machineBusyTicks() {
    try (var lines = Files.lines(Path.of("/proc/stat"))) {
      String[] f = lines.findFirst().orElse("").trim().split("\\s+");
      long[] v = new long[8];
      for (int i = 0; i < 8; ++i) v[i] = Long.parseLong(f[i + 1]);
      return v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    } catch (IOException | RuntimeException e) {
      return 0;
    }
  }

  record Cpu(long self, long broker, long machine) {
    static Cpu take(int[] brokerPids) {
      long b = 0;
      for (int pid : brokerPids) b += processTicks(pid);
      return new Cpu(processTicks(0), b, machineBusyTicks());
    }
  }

  static final class Run {
    long startedNs;
    Totals first, last, end;
    Cpu cpuFirst, cpuLast;
    boolean windowOpen, windowClosed, timedOut;
  }

  // kafka_bench.cc observe().
  static void observe(Totals t, Flags f, Workload w, Run r) {
    boolean warm = t.atNs() - r.startedNs >= f.warmupS * 1_000_000_000L;
    if (!r.windowOpen && t.started() >= f.inFlight && warm) {
      r.first = t;
      r.cpuFirst = Cpu.take(f.brokerPids);
      r.windowOpen = true;
    }
    if (!r.windowOpen || r.windowClosed) return;
    boolean elapsed = t.atNs() - r.first.atNs() >= f.seconds * 1_000_000_000L;
    boolean dry = w.nextIndex.get() >= w.executions;
    boolean draining = dry && 2 * (t.started() - t.ended()) < f.inFlight;
    if (elapsed || draining || t.ended() == f.executions) {
      r.last = t;
      r.cpuLast = Cpu.take(f.brokerPids);
      r.windowClosed = true;
    }
  }

  // -------------------------------------------------------------------------------- setup

  static void createTopics(Flags f, Topics t) throws Exception {
    Properties p = new Properties();
    p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, f.bootstrap);
    try (Admin admin = Admin.create(p)) {
      List<NewTopic> topics = new ArrayList<>();
      for (String name : t.all()) topics.add(new NewTopic(name, f.partitions, (short) 1));
      admin.createTopics(topics).all().get(60, TimeUnit.SECONDS);
    }
  }

  // bench_common.cc submit_starts: the first --in-flight StartExecutions, before Streams runs.
  static void submitStarts(Flags f, Topics t, Workload w) {
    try (var producer = idempotentProducer(f.bootstrap, "bench-submit")) {
      for (int n = 0; n < w.inFlight; ++n) {
        int i = w.takeIndex();
        producer.send(new ProducerRecord<>(t.ingress(), w.tenantOf(i), startCommand(i)));
      }
      producer.flush();
    }
  }

  static Properties streamsConfig(Flags f, String prefix, Path stateDir) {
    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, prefix + "app");
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, f.bootstrap);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, f.guarantee);
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.toString(f.commitIntervalMs));
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.toString(f.threads));
    p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
    p.putAll(f.streamsProps);
    return p;
  }

  static void deleteTree(Path dir) {
    try (Stream<Path> s = Files.walk(dir)) {
      s.sorted(Comparator.reverseOrder()).forEach(x -> x.toFile().delete());
    } catch (IOException e) {
      System.err.println("kstreams_bench: could not remove " + dir + ": " + e);
    }
  }

  // --------------------------------------------------------------------------------- main

  static double percentileMs(long[] sorted, int n, double q) {
    if (n == 0) return 0;
    return sorted[Math.min(n - 1, (int) (q * n))] / 1e6;
  }

  static int run(Flags f) throws Exception {
    String prefix = "ksbench-" + ProcessHandle.current().pid() + "-" + System.nanoTime() + "-";
    Topics t = Topics.of(prefix);
    createTopics(f, t);
    List<String> tenants = pickTenants(f.tenants, f.partitions);
    Workload w = new Workload(f.executions, f.inFlight, f.steps, tenants);
    long[] ackCommitNs = new long[f.executions];
    submitStarts(f, t, w);

    Path stateDir = Files.createTempDirectory(Path.of(f.dir), "auterity-ksbench-");
    Runtime.getRuntime().addShutdownHook(new Thread(() -> deleteTree(stateDir)));
    KafkaStreams streams =
        new KafkaStreams(topology(t, f.steps - 1), streamsConfig(f, prefix, stateDir));
    AtomicReference<Throwable> streamsFailure = new AtomicReference<>();
    streams.setUncaughtExceptionHandler(e -> {
      streamsFailure.set(e);
      return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
          .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });
    List<Acker> ackers = new ArrayList<>();
    for (int p = 0; p < f.partitions; ++p) ackers.add(new Acker(f, t, p, w, ackCommitNs));
    streams.start();
    for (Acker a : ackers) a.start();

    Run r = new Run();
    r.startedNs = nowNs();
    Cpu atStart = Cpu.take(f.brokerPids);
    long deadline = r.startedNs + f.timeoutS * 1_000_000_000L;
    while (!r.windowClosed) {
      Thread.sleep(SAMPLE_INTERVAL_MS);
      r.end = readTotals(ackers, streams);
      observe(r.end, f, w, r);
      r.timedOut = r.end.atNs() > deadline;
      if (r.timedOut || streamsFailure.get() != null) break;
      if (ackers.stream().anyMatch(a -> a.failure.get() != null)) break;
    }
    if (!r.windowClosed) {
      if (!r.windowOpen) {
        r.first = readTotals(List.of(), null);
        r.cpuFirst = atStart;
      }
      r.last = r.end;
      r.cpuLast = Cpu.take(f.brokerPids);
    }
    for (Acker a : ackers) a.stopAndJoin();
    // kafka_bench.cc drain(): every ack the ackers flushed must be processed once.
    long drainDeadline = nowNs() + DRAIN_TIMEOUT_MS * 1_000_000;
    Totals drained = readTotals(ackers, streams);
    while (drained.transitions() < drained.acks() && nowNs() < drainDeadline
        && streamsFailure.get() == null) {
      Thread.sleep(SAMPLE_INTERVAL_MS);
      drained = readTotals(ackers, streams);
    }
    streams.close(CLOSE_TIMEOUT);

    report(f, r, ackers);
    for (Acker a : ackers) {
      if (a.failure.get() != null) {
        System.err.println("kstreams_bench: acker p" + a.partition + ": " + a.failure.get());
        return 1;
      }
    }
    if (streamsFailure.get() != null) {
      System.err.println("kstreams_bench: Streams failed: " + streamsFailure.get());
      return 1;
    }
    boolean ok = drained.rejections() == 0 && drained.staleAcks() == 0
        && drained.transitions() == drained.acks() && r.windowOpen && !r.timedOut;
    if (!ok) {
      System.err.printf("kstreams_bench: run wrong or incomplete: %d transitions for %d acks, "
              + "%d rejections, %d stale acks%s%s%n",
          drained.transitions(), drained.acks(), drained.rejections(), drained.staleAcks(),
          r.windowOpen ? "" : ", the window never opened", r.timedOut ? " (hit --timeout)" : "");
      return 1;
    }
    return 0;
  }

  static void report(Flags f, Run r, List<Acker> ackers) {
    Totals a = r.first, b = r.last;
    double windowS = (b.atNs() - a.atNs()) / 1e9;
    double tps = ratio(b.transitions() - a.transitions(), windowS);
    double streamsCommits = b.streamsCommits() - a.streamsCommits();
    double commitsPerS = ratio(streamsCommits, windowS);
    double txnMs = ratio(b.txnCommitNs() - a.txnCommitNs(), streamsCommits) / 1e6;
    double ackerCommits = b.ackerCommits() - a.ackerCommits();
    double ackerMs = ratio(b.ackerCommitUs() - a.ackerCommitUs(), ackerCommits) / 1e3;
    double acksPer = ratio(b.acks() - a.acks(), ackerCommits);
    int n = 0;
    for (Acker k : ackers) n += k.samples;
    long[] v = new long[n];
    n = 0;
    for (Acker k : ackers) {
      for (int i = 0; i < k.samples; ++i) {
        if (k.sampleReadNs[i] >= a.atNs() && k.sampleReadNs[i] <= b.atNs()) v[n++] = k.sampleNs[i];
      }
    }
    Arrays.sort(v, 0, n);
    double p50 = percentileMs(v, n, 0.50), p90 = percentileMs(v, n, 0.90);
    double p99 = percentileMs(v, n, 0.99), max = n == 0 ? 0 : v[n - 1] / 1e6;
    double cores = Runtime.getRuntime().availableProcessors();
    double hz = 100; // USER_HZ on Linux
    double all = windowS * cores * hz;
    double self = ratio(r.cpuLast.self() - r.cpuFirst.self(), all);
    double broker = ratio(r.cpuLast.broker() - r.cpuFirst.broker(), all);
    double machine = ratio(r.cpuLast.machine() - r.cpuFirst.machine(), all);
    double others = Math.max(0, machine - self - broker);

    System.out.printf("kstreams_bench: %d partitions, %d x %d steps in flight, %s, "
            + "commit.interval.ms %d, %d stream threads, Kafka Streams %s%n",
        f.partitions, f.inFlight, f.steps, f.guarantee, f.commitIntervalMs, f.threads,
        org.apache.kafka.common.utils.AppInfoParser.getVersion());
    if (!f.streamsProps.isEmpty()) System.out.println("  extra StreamsConfig: " + f.streamsProps);
    System.out.printf("  %-40s %10.0f   (window %.2f s)%n", "step transitions/s", tps, windowS);
    System.out.printf("  %-40s %10.2f %8.2f %8.2f %8.2f   (%d samples)%n",
        "ack->next command ms p50 p90 p99 max", p50, p90, p99, max, n);
    System.out.printf("  %-40s %10.1f   (%.2f ms per producer commit)%n",
        "Streams commits/s (all threads)", commitsPerS, txnMs);
    System.out.printf("  %-40s %10.1f   (%.1f acks, %.2f ms each)%n", "acker commits/s",
        ratio(ackerCommits, windowS), acksPer, ackerMs);
    System.out.printf("  %-40s %10.1f%%   (broker %.1f%%, machine busy %.1f%%, others %.1f%%)%n",
        "CPU: Streams process, % of all cores", 100 * self, 100 * broker, 100 * machine,
        100 * others);
    if (f.json) {
      System.out.printf("{\"bench\":\"kstreams\",\"partitions\":%d,\"in_flight\":%d,\"steps\":%d,"
              + "\"guarantee\":\"%s\",\"commit_interval_ms\":%d,\"threads\":%d,\"props\":\"%s\","
              + "\"transitions_per_s\":%.0f,\"window_s\":%.2f,"
              + "\"latency_ms\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"max\":%.2f},"
              + "\"commits_per_s\":%.1f,\"commit_ms\":%.2f,\"acker_commit_ms\":%.2f,"
              + "\"cpu_share\":{\"streams\":%.3f,\"broker\":%.3f,\"others\":%.3f}}%n",
          f.partitions, f.inFlight, f.steps, f.guarantee, f.commitIntervalMs, f.threads,
          String.join(",", f.streamsProps.entrySet().stream()
              .map(e -> e.getKey() + "=" + e.getValue()).toList()), tps,
          windowS, p50, p90, p99, max, commitsPerS, txnMs, ackerMs, self, broker, others);
    }
  }

  static void usage() {
    System.out.println("""
        Usage: kstreams_bench --bootstrap HOST:PORT [options]
          The workload of bench/kafka_bench.cc on a Kafka Streams application
          (bench/kstreams/README.md).
          --partitions N          partitions of every topic (2)
          --steps N               task steps of the linear workflow (10)
          --in-flight N           executions running at once, closed loop (1000)
          --executions N          executions in all; 0: as many as the window takes (0)
          --tenants N             tenants, spread evenly over the partitions (2)
          --ack-batch N           commands acked per acker flush, max (1024)
          --commit-interval-ms N  Kafka Streams commit.interval.ms (100, its EOS default)
          --threads N             num.stream.threads (2)
          --guarantee G           processing.guarantee (exactly_once_v2)
          --warmup-s N            running before the window may open (10)
          --seconds N             measuring window (15)
          --timeout N             longest run, window included (120)
          --broker-pids P,P       broker JVM pids, for the CPU split
          --dir DIR               parent of the state directory (java.io.tmpdir)
          --streams-prop K=V      an extra StreamsConfig entry, applied last (repeatable)
          --json                  also print the results as one JSON line""");
  }

  static int intIn(String flag, String v, long lo, long hi) {
    long x;
    try {
      x = Long.parseLong(v);
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(flag + ": not a number: " + v);
    }
    if (x < lo || x > hi) {
      throw new IllegalArgumentException(flag + ": " + x + " is outside " + lo + ".." + hi);
    }
    return (int) x;
  }

  static Flags parse(String[] args) {
    Flags f = new Flags();
    for (int i = 0; i < args.length; ++i) {
      String a = args[i];
      if (a.equals("--json")) {
        f.json = true;
        continue;
      }
      if (a.equals("--help") || a.equals("-h")) {
        usage();
        System.exit(0);
      }
      if (i + 1 >= args.length) throw new IllegalArgumentException(a + " needs a value");
      String v = args[++i];
      switch (a) {
        case "--bootstrap" -> f.bootstrap = v;
        case "--partitions" -> f.partitions = intIn(a, v, 1, 64);
        case "--steps" -> f.steps = intIn(a, v, 1, 60);
        case "--in-flight" -> f.inFlight = intIn(a, v, 1, 1_000_000);
        case "--executions" -> f.executions = intIn(a, v, 0, EXECUTIONS_UNBOUNDED);
        case "--tenants" -> f.tenants = intIn(a, v, 1, 10_000);
        case "--ack-batch" -> f.ackBatch = intIn(a, v, 1, 1 << 20);
        case "--commit-interval-ms" -> f.commitIntervalMs = intIn(a, v, 0, 10_000);
        case "--threads" -> f.threads = intIn(a, v, 1, 64);
        case "--guarantee" -> {
          if (!v.equals("exactly_once_v2") && !v.equals("at_least_once")) {
            throw new IllegalArgumentException("--guarantee: exactly_once_v2 or at_least_once");
          }
          f.guarantee = v;
        }
        case "--warmup-s" -> f.warmupS = intIn(a, v, 0, 600);
        case "--seconds" -> f.seconds = intIn(a, v, 1, 3600);
        case "--timeout" -> f.timeoutS = intIn(a, v, 1, 86_400);
        case "--broker-pids" ->
            f.brokerPids = Arrays.stream(v.split(",")).mapToInt(Integer::parseInt).toArray();
        case "--dir" -> f.dir = v;
        case "--streams-prop" -> {
          int eq = v.indexOf('=');
          if (eq <= 0) throw new IllegalArgumentException("--streams-prop: KEY=VALUE, got " + v);
          f.streamsProps.put(v.substring(0, eq), v.substring(eq + 1));
        }
        default -> throw new IllegalArgumentException("unknown option " + a + " (see --help)");
      }
    }
    if (f.bootstrap.isEmpty()) throw new IllegalArgumentException("--bootstrap is required");
    if (f.executions == 0) f.executions = EXECUTIONS_UNBOUNDED;
    f.inFlight = Math.min(f.inFlight, f.executions);
    return f;
  }

  public static void main(String[] args) throws Exception {
    Flags f;
    try {
      f = parse(args);
    } catch (IllegalArgumentException e) {
      System.err.println("kstreams_bench: " + e.getMessage());
      System.exit(2);
      return;
    }
    // Kafka clients can block past their timeouts: if the run takes far longer than planned,
    // give up (the shutdown hook still removes the state directory).
    long limitS = f.timeoutS + WATCHDOG_SLACK_S;
    Thread watchdog = new Thread(() -> {
      try {
        Thread.sleep(limitS * 1000);
        System.err.println("kstreams_bench: still running after " + limitS + " s, aborting");
        System.exit(3);
      } catch (InterruptedException e) {
        // the run ended
      }
    }, "watchdog");
    watchdog.setDaemon(true);
    watchdog.start();
    int rc;
    try {
      rc = run(f);
    } catch (Exception e) {
      System.err.println("kstreams_bench: " + e);
      rc = 2;
    }
    System.exit(rc);
  }
}
