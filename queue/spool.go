package queue

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/mxfront/mxfront/envelope"
)

// Spool layout under Config.Dir (queue_directory):
//
//	lock            flock(2)ed by the running queue: one process per spool
//	msg/ID.tmp      message being received (temp file; never recovered)
//	incoming/ID     the same, from older versions (removed at recovery)
//	msg/ID          committed message: content + envelope, immutable
//	msg/ID.state    append-only delivery bookkeeping for msg/ID (optional)
//	hold/ID         message on hold (Envelope.Hold, or `mxfront queue
//	                hold`), not scheduled; hold/ID.state goes with it
//	corrupt/ID      files that failed validation, moved aside for a human
//	holds           units on hold (JSON, replaced atomically; units.go)
//	control         the daemon's control socket (package queue/control)
//
// A message file and its state file move between msg/ and hold/ one after
// the other (message first); recovery reunites a state file with its
// message wherever that is, so a crash between the two renames loses no
// bookkeeping.
//
// A message file is written once and never changed, so one fsync makes it
// durable:
//
//	offset 0      header, 8 bytes: "MXFQ", uint32 format version (1)
//	offset 8      content, C bytes (headers and body, CRLF, as delivered)
//	offset 8+C    metadata, E bytes: JSON fileMeta (envelope and queue data)
//	offset 8+C+E  footer, 32 bytes: "MXFE", uint64 C, uint32 E,
//	              uint32 CRC-32C(content), uint32 CRC-32C(metadata),
//	              uint32 reserved (0), uint32 CRC-32C(footer[0:28])
//
// All integers are big-endian. Putting the lengths in a footer lets the
// content stream to disk as it arrives. A file whose size is not exactly
// 8+C+E+32, or whose magic or checksums do not match, is damaged. Recovery
// checks everything but the content checksum (that would read every queued
// byte at start-up); the content checksum is verified whenever the content
// is read to its end, i.e. at every delivery.
//
// The state file holds one record per line: 8 hex digits of CRC-32C, a
// space, a JSON stateRecord, "\n". Lines are only appended. A torn last line
// (crash during an append) is cut off at recovery; any other bad line is
// logged and skipped, which can only cause a repeated attempt, never a loss.

const (
	dirIncoming = "incoming"
	// tmpSuffix marks a message file still being received in msg/.
	tmpSuffix   = ".tmp"
	dirMsg      = "msg"
	dirHold     = "hold"
	dirCorrupt  = "corrupt"
	lockName    = "lock"
	stateSuffix = ".state"

	fileMagic     = "MXFQ"
	footerMagic   = "MXFE"
	fileVersion   = 1
	headerLen     = 8
	footerLen     = 32
	maxMetaLen    = 16 << 20 // an envelope larger than this is damage
	recordDone    = "done"
	recordDefer   = "defer"
	recordHold    = "hold"    // put on hold by the operator (Text: reason)
	recordRelease = "release" // released from hold
	recordFlush   = "flush"   // retry now (written by the offline tools)
	recordRequeue = "requeue" // expand the recipients again at the next attempt
	recordWarned  = "warned"  // delay warning sent (delay_warning_time)
	statusSent    = "sent"
	statusBounced = "bounced"
	statusExpired = "expired"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt marks a queue file that failed validation. Body readers return
// it (wrapped) when the content checksum does not match at the end of the
// content; a Deliverer that sees a read error must abort the transaction
// instead of finishing DATA.
var ErrCorrupt = errors.New("queue: damaged queue file")

// fileMeta is the JSON metadata block of a message file. New queue-level
// facts that never change after commit belong here; changing ones belong in
// the state file.
type fileMeta struct {
	Env *envelope.Envelope `json:"env"`
	// Queued is when the message was committed (Postfix "delays=a/..."
	// splits the delay at this point).
	Queued time.Time `json:"queued"`
	// Replaces names the message this one supersedes (requeue: the same
	// content with its recipients expanded again). Recovery removes the
	// old one if a crash left both.
	Replaces string `json:"replaces,omitempty"`
}

func fileHeader() []byte {
	b := make([]byte, headerLen)
	copy(b, fileMagic)
	binary.BigEndian.PutUint32(b[4:], fileVersion)
	return b
}

func fileFooter(contentLen int64, metaLen int, crcContent, crcMeta uint32) []byte {
	b := make([]byte, footerLen)
	copy(b, footerMagic)
	binary.BigEndian.PutUint64(b[4:], uint64(contentLen))
	binary.BigEndian.PutUint32(b[12:], uint32(metaLen))
	binary.BigEndian.PutUint32(b[16:], crcContent)
	binary.BigEndian.PutUint32(b[20:], crcMeta)
	binary.BigEndian.PutUint32(b[28:], crc32.Checksum(b[:28], crcTable))
	return b
}

// spoolFile is what a validated message file says about itself.
type spoolFile struct {
	meta       fileMeta
	contentLen int64
	crcContent uint32
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// readSpoolFile validates a message file's structure and metadata. I/O
// errors are returned as they are; damage is wrapped in ErrCorrupt.
func readSpoolFile(f *os.File, id string) (*spoolFile, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < headerLen+footerLen {
		return nil, corruptf("%d bytes is too short", size)
	}
	var hdr [headerLen]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return nil, err
	}
	if string(hdr[:4]) != fileMagic {
		return nil, corruptf("bad magic %q", hdr[:4])
	}
	if v := binary.BigEndian.Uint32(hdr[4:]); v != fileVersion {
		return nil, corruptf("unsupported format version %d", v)
	}
	var ftr [footerLen]byte
	if _, err := f.ReadAt(ftr[:], size-footerLen); err != nil {
		return nil, err
	}
	if string(ftr[:4]) != footerMagic {
		return nil, corruptf("bad footer magic")
	}
	if crc32.Checksum(ftr[:28], crcTable) != binary.BigEndian.Uint32(ftr[28:]) {
		return nil, corruptf("footer checksum mismatch")
	}
	clen := binary.BigEndian.Uint64(ftr[4:])
	mlen := int64(binary.BigEndian.Uint32(ftr[12:]))
	if mlen == 0 || mlen > maxMetaLen || clen > uint64(size) || headerLen+int64(clen)+mlen+footerLen != size {
		return nil, corruptf("lengths %d+%d do not match file size %d", clen, mlen, size)
	}
	mb := make([]byte, mlen)
	if _, err := f.ReadAt(mb, headerLen+int64(clen)); err != nil {
		return nil, err
	}
	if crc32.Checksum(mb, crcTable) != binary.BigEndian.Uint32(ftr[20:]) {
		return nil, corruptf("metadata checksum mismatch")
	}
	var sf spoolFile
	if err := json.Unmarshal(mb, &sf.meta); err != nil {
		return nil, corruptf("metadata: %v", err)
	}
	env := sf.meta.Env
	switch {
	case env == nil:
		return nil, corruptf("no envelope")
	case env.ID != id:
		return nil, corruptf("envelope is for %q", env.ID)
	case len(env.Rcpts) == 0:
		return nil, corruptf("no recipients")
	case env.Size != int64(clen):
		return nil, corruptf("envelope size %d, content %d", env.Size, clen)
	}
	sf.contentLen = int64(clen)
	sf.crcContent = binary.BigEndian.Uint32(ftr[16:])
	return &sf, nil
}

// bodyReader reads a message's content and checks its CRC at the end.
type bodyReader struct {
	r      *io.SectionReader
	crc    uint32
	want   uint32
	onBad  func()
	failed bool
}

func newBodyReader(f *os.File, sf *spoolFile, onBad func()) *bodyReader {
	return &bodyReader{r: io.NewSectionReader(f, headerLen, sf.contentLen), want: sf.crcContent, onBad: onBad}
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.failed {
		return 0, fmt.Errorf("%w: content checksum mismatch", ErrCorrupt)
	}
	n, err := b.r.Read(p)
	b.crc = crc32.Update(b.crc, crcTable, p[:n])
	if err == io.EOF && b.crc != b.want {
		b.failed = true
		if b.onBad != nil {
			b.onBad()
		}
		return n, fmt.Errorf("%w: content checksum mismatch", ErrCorrupt)
	}
	return n, err
}

func (b *bodyReader) Close() error { return nil }

// stateRecord is one line of a state file.
type stateRecord struct {
	// T is one of the record* constants. Readers skip types they do not
	// know, so later versions can add records.
	T  string    `json:"t"`
	At time.Time `json:"at"`
	// done: these recipients (indexes into Env.Rcpts) are finished.
	Rcpts  []int  `json:"rcpts,omitempty"`
	Status string `json:"status,omitempty"` // sent, bounced, expired
	// defer: the attempt count so far, the next attempt, and the last
	// reply per still-pending recipient (for the queue tools). done
	// records of bounced and expired recipients carry their replies too.
	Attempts int           `json:"attempts,omitempty"`
	Next     time.Time     `json:"next,omitzero"`
	Reasons  []deferReason `json:"reasons,omitempty"`
	// hold: the reason given by the operator.
	Text string `json:"text,omitempty"`
}

type deferReason struct {
	Rcpt  int    `json:"rcpt"`
	Relay string `json:"relay,omitempty"`
	Reply string `json:"reply"`
	// Dest is the destination (Route.Key, the unit) of the attempt; the
	// queue tools filter by it, and releasing a unit finds its mail by it.
	Dest string `json:"dest,omitempty"`
}

func encodeState(recs ...stateRecord) []byte {
	var buf bytes.Buffer
	for _, r := range recs {
		js, err := json.Marshal(r)
		if err != nil {
			panic(err) // stateRecord always marshals
		}
		buf.WriteString(fmt.Sprintf("%08x ", crc32.Checksum(js, crcTable)))
		buf.Write(js)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// stateLog is what a state file says after replay.
type stateLog struct {
	recs    []stateRecord
	goodLen int64 // bytes up to the end of the last complete line
	torn    bool  // the file ends in an incomplete line
	bad     int   // complete lines that failed their checksum or JSON
}

// maxRecordLen bounds one state record (a defer record of 1000
// recipients with their replies is about 150 KB); a longer line is damage.
const maxRecordLen = 16 << 20

func readState(r io.Reader) (*stateLog, error) {
	st := &stateLog{}
	// Most state files are a few hundred bytes: a small buffer, and long
	// records assembled from several reads.
	br := bufio.NewReaderSize(r, 4096)
	var off int64
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long[:0], line...)
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				if len(long) <= maxRecordLen {
					long = append(long, line...)
				} else {
					off += int64(len(line)) // counted, not kept
				}
			}
			line = long
		}
		if err == io.EOF {
			if len(line) > 0 {
				st.torn = true
			}
			return st, nil
		}
		if err != nil {
			return nil, err
		}
		off += int64(len(line))
		st.goodLen = off
		if len(line) > maxRecordLen {
			st.bad++
			continue
		}
		if rec, ok := parseStateLine(line[:len(line)-1]); ok {
			st.recs = append(st.recs, rec)
		} else {
			st.bad++
		}
	}
}

func parseStateLine(line []byte) (stateRecord, bool) {
	var rec stateRecord
	if len(line) < 10 || line[8] != ' ' {
		return rec, false
	}
	want, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil {
		return rec, false
	}
	js := line[9:]
	if crc32.Checksum(js, crcTable) != uint32(want) {
		return rec, false
	}
	if err := json.Unmarshal(js, &rec); err != nil {
		return rec, false
	}
	return rec, true
}
