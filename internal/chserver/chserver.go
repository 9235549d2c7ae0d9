// Package chserver writes the configuration of a clickhouse-server that
// runs on this machine for Pulse: `pulse dev`'s history (history.StartLocal)
// and the test servers (internal/testenv) start theirs with it.
package chserver

import (
	"os"
	"path/filepath"
	"strings"
	"text/template"
)

// WriteConfig writes config.xml and users.xml for a clickhouse-server
// keeping its data in dir and listening on 127.0.0.1 only, and creates the
// folders it needs. It returns the path of config.xml. The settings are ones
// Debian's ClickHouse 18.16 and current releases both read.
func WriteConfig(dir string, tcpPort, httpPort, interserverPort int) (string, error) {
	for _, sub := range []string{"data", "tmp", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return "", err
		}
	}
	conf := localConf{Dir: dir, TCP: tcpPort, HTTP: httpPort, Interserver: interserverPort}
	for name, tmpl := range map[string]*template.Template{"config.xml": localConfig, "users.xml": localUsers} {
		var b strings.Builder
		if err := tmpl.Execute(&b, conf); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, "config.xml"), nil
}

type localConf struct {
	Dir                    string
	TCP, HTTP, Interserver int
}

// localConfig keeps to settings that Debian's ClickHouse 18.16 and current
// releases both read.
var localConfig = template.Must(template.New("config.xml").Parse(`<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{{.Dir}}/clickhouse-server.log</log>
    <errorlog>{{.Dir}}/clickhouse-server.err.log</errorlog>
    <size>100M</size>
    <count>2</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{{.TCP}}</tcp_port>
  <http_port>{{.HTTP}}</http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <interserver_http_port>{{.Interserver}}</interserver_http_port>
  <path>{{.Dir}}/data/</path>
  <tmp_path>{{.Dir}}/tmp/</tmp_path>
  <user_files_path>{{.Dir}}/user_files/</user_files_path>
  <format_schema_path>{{.Dir}}/format_schemas/</format_schema_path>
  <users_config>{{.Dir}}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <max_concurrent_queries>100</max_concurrent_queries>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <mlock_executable>false</mlock_executable>
  <merge_tree>
    <!-- Parts merged away are deleted after a minute, not the default 8:
         a pulse dev inserting small batches keeps few of them on disk. -->
    <old_parts_lifetime>60</old_parts_lifetime>
  </merge_tree>
</yandex>
`))

var localUsers = template.Must(template.New("users.xml").Parse(`<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>4000000000</max_memory_usage>
      <load_balancing>random</load_balancing>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries>
        <errors>0</errors>
        <result_rows>0</result_rows>
        <read_rows>0</read_rows>
        <execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
`))
