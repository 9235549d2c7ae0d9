// Package kafka is the one place Pulse builds Kafka clients from config:
// seed brokers, the producer's durability options, the consumers' defaults,
// topic creation, and the embedded broker (franz-go's kfake) that
// `pulse dev` and fast tests run in process.
//
// Every service takes its clients from here, so a setting changed here
// changes for all of them.
package kafka
