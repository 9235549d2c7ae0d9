package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// KafkaVersion is the Apache Kafka release the tests run. Keep it in step
// with deploy/kafka/pom.xml and scripts/install-test-deps.sh.
const KafkaVersion = "4.2.0"

// kafkaLibs finds the broker's jars: $PULSE_KAFKA_LIBS, else
// ${PULSE_CACHE:-$HOME/.cache/pulse}/kafka-<KafkaVersion>/libs, where
// scripts/install-test-deps.sh puts them.
func kafkaLibs() (string, error) {
	dir := os.Getenv("PULSE_KAFKA_LIBS")
	if dir == "" {
		cache := os.Getenv("PULSE_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("cannot find the Kafka jars: %w", err)
			}
			cache = filepath.Join(home, ".cache", "pulse")
		}
		dir = filepath.Join(cache, "kafka-"+KafkaVersion, "libs")
	}
	if jars, _ := filepath.Glob(filepath.Join(dir, "kafka_2.13-*.jar")); len(jars) == 0 {
		return "", fmt.Errorf("no Kafka %s jars in %s: %w", KafkaVersion, dir, errMissing)
	}
	return dir, nil
}

func javaPath() (string, error) {
	if home := os.Getenv("JAVA_HOME"); home != "" {
		if p := filepath.Join(home, "bin", "java"); fileExists(p) {
			return p, nil
		}
	}
	return lookPath("java")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// newKafka formats a KRaft log directory in dir and starts a single node that
// is both broker and controller.
func newKafka(dir string) (*Server, error) {
	libs, err := kafkaLibs()
	if err != nil {
		return nil, err
	}
	java, err := javaPath()
	if err != nil {
		return nil, err
	}
	classpath := filepath.Join(libs, "*")
	return launch(2, func(ports []int) (*Server, error) { return kafkaServer(dir, java, classpath, ports) })
}

// kafkaServer configures a broker in dir on ports (broker, controller),
// formatting the log directory the first time.
func kafkaServer(dir, java, classpath string, ports []int) (*Server, error) {
	conf := kafkaConf{Dir: dir, Broker: ports[0], Controller: ports[1]}
	var b strings.Builder
	if err := kafkaProperties.Execute(&b, conf); err != nil {
		return nil, err
	}
	props := filepath.Join(dir, "server.properties")
	if err := os.WriteFile(props, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	// Formatting is once per log directory; a retry on new ports rewrites
	// only the listeners, which the formatted metadata does not record.
	if !fileExists(filepath.Join(dir, "data", "meta.properties")) {
		if err := kafkaFormat(java, classpath, props); err != nil {
			return nil, err
		}
	}
	// The JVM settings of Kafka's own kafka-server-start.sh
	// (KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS): benchmarks measure
	// the broker as it is run. With a smaller heap (-Xmx512m) G1 sized
	// the young generation to ~190 MiB and paused every ~0.4 s at 400k
	// records/s, and those pauses (3-69 ms on a busy machine) land in
	// ingest's tail latency.
	argv := []string{java, "-Xms1g", "-Xmx1g"}
	argv = append(argv, kafkaGC()...)
	argv = append(argv,
		"-XX:+ExplicitGCInvokesConcurrent", "-XX:MaxInlineLevel=15",
		"-XX:+ExitOnOutOfMemoryError",
		"-Xlog:gc:file="+filepath.Join(dir, "gc.log"),
		"-Djava.awt.headless=true",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
		"-Dorg.slf4j.simpleLogger.showDateTime=true",
		"-cp", classpath,
		"kafka.Kafka", props)
	return &Server{
		name: "kafka",
		dir:  dir,
		addr: hostPort(conf.Broker),
		argv: argv,
		logs: []string{filepath.Join(dir, "kafka.log")},
		ready: func(ctx context.Context, s *Server) error {
			err := kafkaReady(ctx, []string{s.addr})
			if err != nil && s.loggedSinceStart(kafkaFatal) {
				// A broker that cannot bind its port logs this and
				// gives up, but its JVM can linger for minutes: treat
				// it as exited so that launch tries new ports.
				return fmt.Errorf("%w: it logged %q", errExited, kafkaFatal)
			}
			return err
		},
		wait:  120 * time.Second,
		grace: 60 * time.Second,
	}, nil
}

// kafkaFatal is what kafka.Kafka logs when its startup failed.
const kafkaFatal = "Exiting Kafka due to fatal exception during startup"

// EnvKafkaGC names the broker's garbage collector flags, space-separated, in
// place of Kafka's own (G1 with a 20 ms pause goal), for benchmarks that
// compare collectors: PULSE_TEST_KAFKA_GC="-XX:+UseZGC".
const EnvKafkaGC = "PULSE_TEST_KAFKA_GC"

func kafkaGC() []string {
	if v := strings.Fields(os.Getenv(EnvKafkaGC)); len(v) > 0 {
		return v
	}
	return []string{"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35"}
}

func kafkaFormat(java, classpath, props string) error {
	id, err := kafkaClusterID()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// C1 only: the tool runs for a second, so compiling harder is wasted.
	cmd := exec.CommandContext(ctx, java, "-Xmx256m", "-XX:TieredStopAtLevel=1",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
		"-cp", classpath, "kafka.tools.StorageTool", "format", "-t", id, "-c", props)
	cmd.SysProcAttr = sysProcAttr()
	if out, err := cmd.CombinedOutput(); err != nil {
		if len(out) > 3000 {
			out = out[len(out)-3000:]
		}
		return fmt.Errorf("cannot format Kafka storage: %w\n%s", err, out)
	}
	return nil
}

// kafkaClusterID makes an id as Kafka's Uuid.randomUuid does: 16 random
// bytes in unpadded URL-safe base64, not starting with '-'.
func kafkaClusterID() (string, error) {
	for {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		if id := base64.RawURLEncoding.EncodeToString(b[:]); id[0] != '-' {
			return id, nil
		}
	}
}

// kafkaReady returns nil once the cluster answers metadata with a broker and
// an active controller.
func kafkaReady(ctx context.Context, seeds []string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DialTimeout(time.Second), kgo.RequestRetries(0))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	if len(resp.Brokers) == 0 || resp.ControllerID < 0 {
		return errors.New("kafka metadata has no broker or controller yet")
	}
	return nil
}

type kafkaConf struct {
	Dir                string
	Broker, Controller int
}

// kafkaProperties is a single KRaft node for tests: replication factors of
// one, topics created on first use, few partitions for internal topics so
// the first consumer group starts quickly, and no rebalance delay.
var kafkaProperties = template.Must(template.New("server.properties").Parse(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{{.Controller}}
listeners=PLAINTEXT://127.0.0.1:{{.Broker}},CONTROLLER://127.0.0.1:{{.Controller}}
advertised.listeners=PLAINTEXT://127.0.0.1:{{.Broker}}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={{.Dir}}/data
auto.create.topics.enable=true
delete.topic.enable=true
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=16777216
log.cleaner.backoff.ms=1000
`))
