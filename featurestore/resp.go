package featurestore

// RESP, the Redis protocol, as the MGET connections (redisbatch.go) and
// the near cache's tracking connection (redisnear.go) write and read it.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// redisError is an error the server answered: the connection is still in
// step.
type redisError string

func (e redisError) Error() string { return "redis: " + string(e) }

// parseHeader parses an array or bulk string header ("*3", "$12", "$-1").
func parseHeader(line []byte, kind byte) (int, bool) {
	if line[0] != kind {
		return 0, false
	}
	if len(line) == 3 && line[1] == '-' && line[2] == '1' {
		return -1, true
	}
	n := 0
	for _, c := range line[1:] {
		if c < '0' || c > '9' || n > 1<<40 {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, len(line) > 1
}

func appendArrayHeader(w []byte, n int) []byte {
	w = append(w, '*')
	w = strconv.AppendInt(w, int64(n), 10)
	return append(w, "\r\n"...)
}

func appendBulk(w []byte, s string) []byte {
	w = append(w, '$')
	w = strconv.AppendInt(w, int64(len(s)), 10)
	w = append(w, "\r\n"...)
	w = append(w, s...)
	return append(w, "\r\n"...)
}

// appendCommand appends one command in RESP.
func appendCommand(w []byte, args ...string) []byte {
	w = appendArrayHeader(w, len(args))
	for _, a := range args {
		w = appendBulk(w, a)
	}
	return w
}

// readLine reads one reply line, without its CRLF; it is never empty.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			err = errors.New("redis reply line too long")
		}
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("malformed redis reply line %.40q", line)
	}
	return line[:len(line)-2], nil
}

func expectOK(r *bufio.Reader) error {
	line, err := readLine(r)
	if err != nil {
		return err
	}
	switch line[0] {
	case '+':
		return nil
	case '-':
		return redisError(line[1:])
	}
	return fmt.Errorf("unexpected redis reply %.40q", line)
}

// readBulk reads a bulk string into dst's spare room (or a new array) and
// returns it alone; nil for a null one.
func readBulk(r *bufio.Reader, dst []byte) ([]byte, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	k, ok := parseHeader(line, '$')
	if !ok {
		return nil, fmt.Errorf("unexpected redis reply %.40q, want a bulk string", line)
	}
	if k < 0 {
		return nil, nil
	}
	return readBulkBody(r, k, dst)
}

// readBulkBody is readBulk once the header said k bytes.
func readBulkBody(r *bufio.Reader, k int, dst []byte) ([]byte, error) {
	at := len(dst)
	dst, err := appendBulkBody(r, k, dst)
	if err != nil {
		return nil, err
	}
	return dst[at:], nil
}

// appendBulkBody reads the k bytes of a bulk string and its CRLF, and
// appends the bytes to dst. On an error dst comes back as it was.
func appendBulkBody(r *bufio.Reader, k int, dst []byte) ([]byte, error) {
	at := len(dst)
	dst = slices.Grow(dst, k+2)[:at+k+2]
	if _, err := io.ReadFull(r, dst[at:]); err != nil {
		return dst[:at], err
	}
	if dst[at+k] != '\r' || dst[at+k+1] != '\n' {
		return dst[:at], fmt.Errorf("redis bulk string of %d bytes not followed by CRLF", k)
	}
	return dst[:at+k], nil
}
