package io.pulsert.peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.time.Duration;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.Pipeline;

/**
 * The Kafka Streams peer of {@code pulse loadtest peer}: reads Pulse's
 * events topic (normalised events as JSON, keyed by entity id), keeps each
 * user's features in a RocksDB store (changelogged, exactly-once v2) and
 * writes each updated vector to Redis as a hash.
 *
 * <p>The features are given on the command line, one {@code --feature
 * name|agg|event|field|windowMillis} each (agg count, sum, max, distinct or
 * last; event and field may be empty; window 0 is lifetime), and follow
 * Pulse's rules (docs/features.md): sliding windows of 60 epoch-aligned
 * tiles, tile k holding {@code k*tile < ts <= (k+1)*tile}; a window's value
 * at T aggregates the tiles with {@code k*tile < T} and
 * {@code (k+1)*tile > T-W}; last goes by timestamp, then messageId; events
 * older than the entity's newest by more than the allowed lateness are
 * dropped. Values are as of the wall clock when the vector is written.
 *
 * <p>Redis: {@code <prefix>user:<id>} is a hash of feature name to the
 * value as JSON text ({@code 3}, {@code 12.5}, {@code "c-4"}, {@code null}).
 * Writes are pipelined every --flush-ms (default 5) per task, as a team
 * would batch them; they are a side effect outside the Kafka transaction,
 * idempotent like Pulse's store writes.
 */
public final class KStreamsPeer {
  static final String STORE = "features";

  public static void main(String[] argv) throws Exception {
    Map<String, List<String>> args = parseArgs(argv);
    String bootstrap = one(args, "bootstrap");
    String topic = one(args, "topic");
    String appId = one(args, "application-id");
    String stateDir = one(args, "state-dir");
    String redis = one(args, "redis");
    String prefix = opt(args, "key-prefix", "");
    int threads = Integer.parseInt(opt(args, "threads", "1"));
    long flushMs = Long.parseLong(opt(args, "flush-ms", "5"));
    long lateness = Long.parseLong(opt(args, "allowed-lateness-ms", String.valueOf(7L * 86_400_000L)));
    List<String> specs = args.getOrDefault("feature", List.of());
    if (specs.isEmpty()) {
      throw new IllegalArgumentException("--feature: at least one is needed");
    }
    List<Feature> features = new ArrayList<>();
    for (String s : specs) {
      features.add(Feature.parse(s));
    }
    int colon = redis.lastIndexOf(':');
    if (colon < 0) {
      throw new IllegalArgumentException("--redis: " + redis + " is not host:port");
    }
    String redisHost = redis.substring(0, colon);
    int redisPort = Integer.parseInt(redis.substring(colon + 1));

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    if (args.containsKey("commit-interval-ms")) {
      p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.parseLong(one(args, "commit-interval-ms")));
    }

    Topology t = new Topology();
    t.addSource("events", Serdes.String().deserializer(), Serdes.ByteArray().deserializer(), topic);
    t.addProcessor("features",
        () -> new FeatureProcessor(features, lateness, redisHost, redisPort, prefix, flushMs), "events");
    t.addStateStore(
        Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(STORE), Serdes.String(), Serdes.ByteArray())
            .withCachingEnabled(),
        "features");

    KafkaStreams streams = new KafkaStreams(t, p);
    CountDownLatch done = new CountDownLatch(1);
    streams.setStateListener((now, before) -> {
      System.out.println("state " + now);
      System.out.flush();
      if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
        done.countDown();
      }
    });
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close(Duration.ofSeconds(20));
      done.countDown();
    }));
    streams.start();
    done.await();
    if (streams.state() == KafkaStreams.State.ERROR) {
      System.exit(1);
    }
  }

  static Map<String, List<String>> parseArgs(String[] argv) {
    Map<String, List<String>> m = new HashMap<>();
    for (int i = 0; i < argv.length; i++) {
      if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
        throw new IllegalArgumentException("argument " + argv[i] + ": want --name value");
      }
      m.computeIfAbsent(argv[i].substring(2), k -> new ArrayList<>()).add(argv[++i]);
    }
    return m;
  }

  static String one(Map<String, List<String>> args, String name) {
    List<String> v = args.get(name);
    if (v == null || v.isEmpty() || v.get(0).isEmpty()) {
      throw new IllegalArgumentException("--" + name + ": required");
    }
    return v.get(v.size() - 1);
  }

  static String opt(Map<String, List<String>> args, String name, String def) {
    List<String> v = args.get(name);
    return v == null || v.isEmpty() ? def : v.get(v.size() - 1);
  }

  enum Agg { COUNT, SUM, MAX, DISTINCT, LAST }

  /** One feature: name|agg|event|field|windowMillis. */
  static final class Feature {
    final String name;
    final Agg agg;
    final String event; // "" = any
    final String[] field; // null = none
    final long window; // 0 = lifetime
    final long tile;

    Feature(String name, Agg agg, String event, String field, long window) {
      this.name = name;
      this.agg = agg;
      this.event = event;
      this.field = field.isEmpty() ? null : field.split("\\.");
      this.window = window;
      this.tile = window / 60;
    }

    static Feature parse(String spec) {
      String[] f = spec.split("\\|", -1);
      if (f.length != 5) {
        throw new IllegalArgumentException("--feature " + spec + ": want name|agg|event|field|windowMillis");
      }
      Agg agg;
      try {
        agg = Agg.valueOf(f[1].toUpperCase());
      } catch (IllegalArgumentException e) {
        throw new IllegalArgumentException("--feature " + spec + ": agg " + f[1] + " is not count, sum, max, distinct or last");
      }
      long w = Long.parseLong(f[4]);
      if (w < 0 || (w > 0 && w < 60)) {
        throw new IllegalArgumentException("--feature " + spec + ": window " + w + "ms is not 0 or at least 60ms");
      }
      if (agg == Agg.LAST && w != 0) {
        throw new IllegalArgumentException("--feature " + spec + ": last is lifetime only here");
      }
      if (agg != Agg.COUNT && f[3].isEmpty()) {
        throw new IllegalArgumentException("--feature " + spec + ": " + f[1] + " needs a field");
      }
      return new Feature(f[0], agg, f[2], f[3], w);
    }

    long tileOf(long ts) {
      return window == 0 ? 0 : Math.floorDiv(ts - 1, tile);
    }

    boolean counts(long k, long now) {
      return window == 0 || (k * tile < now && (k + 1) * tile > now - window);
    }
  }

  /** One user's partial aggregates: per feature, tile -> value. */
  static final class State {
    long newest = Long.MIN_VALUE;
    final List<TreeMap<Long, Double>> nums = new ArrayList<>();
    final List<TreeMap<Long, Set<String>>> sets = new ArrayList<>();
    final long[] lastTs;
    final String[] lastId;
    final String[] lastVal;

    State(int n) {
      for (int i = 0; i < n; i++) {
        nums.add(new TreeMap<>());
        sets.add(new TreeMap<>());
      }
      lastTs = new long[n];
      lastId = new String[n];
      lastVal = new String[n];
    }

    byte[] encode() {
      try {
        ByteArrayOutputStream b = new ByteArrayOutputStream(64);
        DataOutputStream o = new DataOutputStream(b);
        o.writeLong(newest);
        int n = nums.size();
        for (int i = 0; i < n; i++) {
          o.writeInt(nums.get(i).size());
          for (Map.Entry<Long, Double> e : nums.get(i).entrySet()) {
            o.writeLong(e.getKey());
            o.writeDouble(e.getValue());
          }
          o.writeInt(sets.get(i).size());
          for (Map.Entry<Long, Set<String>> e : sets.get(i).entrySet()) {
            o.writeLong(e.getKey());
            o.writeInt(e.getValue().size());
            for (String s : e.getValue()) {
              o.writeUTF(s);
            }
          }
          o.writeBoolean(lastVal[i] != null);
          if (lastVal[i] != null) {
            o.writeLong(lastTs[i]);
            o.writeUTF(lastId[i]);
            o.writeUTF(lastVal[i]);
          }
        }
        return b.toByteArray();
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
    }

    static State decode(byte[] bytes, int n) {
      State s = new State(n);
      try {
        DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes));
        s.newest = in.readLong();
        for (int i = 0; i < n; i++) {
          for (int j = in.readInt(); j > 0; j--) {
            s.nums.get(i).put(in.readLong(), in.readDouble());
          }
          for (int j = in.readInt(); j > 0; j--) {
            long k = in.readLong();
            Set<String> set = new HashSet<>();
            for (int m = in.readInt(); m > 0; m--) {
              set.add(in.readUTF());
            }
            s.sets.get(i).put(k, set);
          }
          if (in.readBoolean()) {
            s.lastTs[i] = in.readLong();
            s.lastId[i] = in.readUTF();
            s.lastVal[i] = in.readUTF();
          }
        }
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
      return s;
    }
  }

  static final class FeatureProcessor implements Processor<String, byte[], Void, Void> {
    static final ObjectMapper JSON = new ObjectMapper();
    final List<Feature> features;
    final long lateness;
    final String redisHost;
    final int redisPort;
    final String prefix;
    final long flushMs;
    KeyValueStore<String, byte[]> store;
    Jedis jedis;
    final LinkedHashMap<String, State> dirty = new LinkedHashMap<>();

    FeatureProcessor(List<Feature> features, long lateness, String redisHost, int redisPort, String prefix, long flushMs) {
      this.features = features;
      this.lateness = lateness;
      this.redisHost = redisHost;
      this.redisPort = redisPort;
      this.prefix = prefix;
      this.flushMs = flushMs;
    }

    @Override
    public void init(ProcessorContext<Void, Void> ctx) {
      store = ctx.getStateStore(STORE);
      jedis = new Jedis(redisHost, redisPort);
      ctx.schedule(Duration.ofMillis(flushMs), PunctuationType.WALL_CLOCK_TIME, now -> flush());
    }

    @Override
    public void process(Record<String, byte[]> rec) {
      JsonNode ev;
      try {
        ev = JSON.readTree(rec.value());
      } catch (IOException e) {
        return; // undecodable: Pulse dead-letters it
      }
      String user = text(ev, "userId");
      if (user == null) {
        user = text(ev, "anonymousId");
      }
      String ts = text(ev, "timestamp");
      if (user == null || ts == null) {
        return;
      }
      long millis = parseTime(ts);
      String id = text(ev, "messageId");
      if (id == null) {
        id = "";
      }
      String name = text(ev, "event");
      State st = dirty.get(user);
      if (st == null) {
        byte[] b = store.get(user);
        st = b == null ? new State(features.size()) : State.decode(b, features.size());
      }
      if (st.newest != Long.MIN_VALUE && millis < st.newest - lateness) {
        return; // too late: Pulse dead-letters it
      }
      st.newest = Math.max(st.newest, millis);
      for (int i = 0; i < features.size(); i++) {
        apply(features.get(i), i, st, ev, name, millis, id);
      }
      store.put(user, st.encode());
      dirty.put(user, st);
      if (dirty.size() >= 2000) {
        flush();
      }
    }

    void apply(Feature f, int i, State st, JsonNode ev, String name, long ts, String id) {
      if (!f.event.isEmpty() && !f.event.equals(name)) {
        return;
      }
      JsonNode v = null;
      if (f.field != null) {
        if (f.field.length == 1 && f.field[0].equals("timestamp")) {
          v = JSON.getNodeFactory().numberNode(ts);
        } else {
          v = ev;
          for (String part : f.field) {
            v = v == null ? null : v.get(part);
          }
        }
        if (v == null || v.isNull()) {
          return;
        }
      }
      long k = f.tileOf(ts);
      switch (f.agg) {
        case COUNT -> st.nums.get(i).merge(k, 1.0, Double::sum);
        case SUM -> {
          Double d = number(v);
          if (d != null) {
            st.nums.get(i).merge(k, d, Double::sum);
          }
        }
        case MAX -> {
          Double d = number(v);
          if (d != null) {
            st.nums.get(i).merge(k, d, Math::max);
          }
        }
        case DISTINCT -> st.sets.get(i).computeIfAbsent(k, x -> new HashSet<>()).add(distinctKey(v));
        case LAST -> {
          if (st.lastVal[i] == null || ts > st.lastTs[i] || (ts == st.lastTs[i] && id.compareTo(st.lastId[i]) > 0)) {
            st.lastTs[i] = ts;
            st.lastId[i] = id;
            st.lastVal[i] = v.toString();
          }
        }
      }
      if (f.window > 0) {
        long drop = st.newest - lateness - f.window;
        prune(st.nums.get(i), f, drop);
        prune(st.sets.get(i), f, drop);
      }
    }

    static <V> void prune(TreeMap<Long, V> tiles, Feature f, long drop) {
      Iterator<Long> it = tiles.keySet().iterator();
      while (it.hasNext()) {
        long k = it.next();
        if ((k + 1) * f.tile > drop) {
          return;
        }
        it.remove();
      }
    }

    /** The features as of now, as JSON texts. */
    Map<String, String> values(State st, long now) {
      Map<String, String> out = new HashMap<>();
      for (int i = 0; i < features.size(); i++) {
        Feature f = features.get(i);
        String val;
        switch (f.agg) {
          case COUNT, SUM -> {
            double s = 0;
            for (Map.Entry<Long, Double> e : st.nums.get(i).entrySet()) {
              if (f.counts(e.getKey(), now)) {
                s += e.getValue();
              }
            }
            val = num(s);
          }
          case MAX -> {
            Double m = null;
            for (Map.Entry<Long, Double> e : st.nums.get(i).entrySet()) {
              if (f.counts(e.getKey(), now)) {
                m = m == null ? e.getValue() : Math.max(m, e.getValue());
              }
            }
            val = m == null ? "null" : num(m);
          }
          case DISTINCT -> {
            Set<String> u = new HashSet<>();
            for (Map.Entry<Long, Set<String>> e : st.sets.get(i).entrySet()) {
              if (f.counts(e.getKey(), now)) {
                u.addAll(e.getValue());
              }
            }
            val = num(u.size());
          }
          default -> {
            boolean ts = f.field.length == 1 && f.field[0].equals("timestamp");
            val = st.lastVal[i] != null ? st.lastVal[i] : ts ? "0" : "null";
          }
        }
        out.put(f.name, val);
      }
      return out;
    }

    void flush() {
      if (dirty.isEmpty()) {
        return;
      }
      long now = System.currentTimeMillis();
      Pipeline p = jedis.pipelined();
      for (Map.Entry<String, State> e : dirty.entrySet()) {
        p.hset(prefix + "user:" + e.getKey(), values(e.getValue(), now));
      }
      p.sync();
      dirty.clear();
    }

    @Override
    public void close() {
      try {
        flush();
      } finally {
        jedis.close();
      }
    }

    static String text(JsonNode ev, String name) {
      JsonNode v = ev.get(name);
      return v == null || !v.isTextual() || v.asText().isEmpty() ? null : v.asText();
    }

    static Double number(JsonNode v) {
      double d;
      if (v.isNumber()) {
        d = v.asDouble();
      } else if (v.isBoolean()) {
        d = v.asBoolean() ? 1 : 0;
      } else if (v.isTextual()) {
        try {
          d = Double.parseDouble(v.asText().trim());
        } catch (NumberFormatException e) {
          return null;
        }
      } else {
        return null;
      }
      return Double.isFinite(d) ? d : null;
    }

    static String distinctKey(JsonNode v) {
      if (v.isNumber()) {
        return "n" + v.asDouble();
      }
      if (v.isTextual()) {
        return "s" + v.asText();
      }
      return "j" + v;
    }

    static String num(double d) {
      if (d == Math.rint(d) && Math.abs(d) < 1e15) {
        return Long.toString((long) d);
      }
      return Double.toString(d);
    }

    static long parseTime(String s) {
      try {
        return Instant.parse(s).toEpochMilli();
      } catch (RuntimeException e) {
        return OffsetDateTime.parse(s).toInstant().toEpochMilli();
      }
    }
  }
}
