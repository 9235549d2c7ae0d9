// Package uuidtext writes a UUID's canonical text form
// (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) without allocating, for the hot
// paths that stamp one per event or prediction (github.com/google/uuid's
// String and MarshalText allocate).
package uuidtext

import "encoding/hex"

// Append appends id's 36-character text form to dst.
func Append(dst []byte, id [16]byte) []byte {
	var buf [36]byte
	hex.Encode(buf[0:8], id[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], id[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], id[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], id[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:], id[10:])
	return append(dst, buf[:]...)
}
