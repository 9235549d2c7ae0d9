package kafka

import (
	"fmt"
	"strconv"
	"strings"
)

// The activations topic (pulse.activations, compacted) says, per input
// partition and feature fingerprint, the first input offset the stream
// counted that feature from. Key "<partition>/<fingerprint hex>", value
// the offset in decimal. The stream writes it in the transaction that
// records the activation in its state; backfill reads it to cut history.

// ActivationKey is the key of a partition's activation of a feature.
func ActivationKey(partition int32, fp uint64) []byte {
	return []byte(strconv.Itoa(int(partition)) + "/" + strconv.FormatUint(fp, 16))
}

// ParseActivation reads an activation record.
func ParseActivation(key, value []byte) (partition int32, fp uint64, offset int64, err error) {
	p, f, ok := strings.Cut(string(key), "/")
	if !ok {
		return 0, 0, 0, fmt.Errorf("bad activation key %q", key)
	}
	pp, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("bad activation key %q: %w", key, err)
	}
	if fp, err = strconv.ParseUint(f, 16, 64); err != nil {
		return 0, 0, 0, fmt.Errorf("bad activation key %q: %w", key, err)
	}
	if offset, err = strconv.ParseInt(string(value), 10, 64); err != nil {
		return 0, 0, 0, fmt.Errorf("bad activation value %q: %w", value, err)
	}
	return int32(pp), fp, offset, nil
}
