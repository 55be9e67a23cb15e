package table

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// maxFileSize bounds what a table file may hold; a larger file is almost
// certainly a wrong path.
const maxFileSize = 1 << 30

// readFile reads path completely. When the file changes while it is read (a
// writer that does not rename into place), it is read again, a bounded
// number of times, like Postfix dict_thash re-reads a "hot" file.
func readFile(path string) (string, error) {
	const attempts = 5
	for try := 1; ; try++ {
		data, changed, err := readOnce(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				if _, e := os.Stat(path + ".db"); e == nil {
					return "", fmt.Errorf("%w (mxfront reads the postmap source text %s, not %s.db)", err, path, path)
				}
			}
			return "", err
		}
		if !changed {
			return data, nil
		}
		if try == attempts {
			return "", fmt.Errorf("%s: file keeps changing while it is read; write it to a temporary file and rename it into place", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readOnce(path string) (data string, changed bool, err error) {
	// Refuse non-regular files before opening: opening a FIFO blocks.
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		return "", false, fmt.Errorf("%s: not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return "", false, err
	}
	if !before.Mode().IsRegular() {
		return "", false, fmt.Errorf("%s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return "", false, err
	}
	if len(b) > maxFileSize {
		return "", false, fmt.Errorf("%s: larger than %d bytes", path, maxFileSize)
	}
	after, err := f.Stat()
	if err != nil {
		return "", false, err
	}
	changed = after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) ||
		int64(len(b)) != after.Size()
	return string(b), changed, nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'
}

func trimSpace(s string) string {
	i, j := 0, len(s)
	for i < j && isSpace(s[i]) {
		i++
	}
	for j > i && isSpace(s[j-1]) {
		j--
	}
	return s[i:j]
}

// logicalLines calls fn for each logical line of data, with the number of
// its first physical line, as Postfix readlline(3) reads them (postmap(1)
// "INPUT FILE FORMAT"):
//
//   - empty lines, whitespace-only lines, and lines whose first
//     non-whitespace character is '#' are ignored, and do not end a logical
//     line;
//   - a logical line starts with non-whitespace text; a line that starts
//     with whitespace continues it (it is appended as is, leading
//     whitespace included).
//
// Postfix skips a continuation line without preceding text with a warning;
// here it is an error. A CR before the newline is ignored, and trailing
// whitespace is removed from the result. Lines must be valid UTF-8 without NUL characters.
func logicalLines(file, data string, fn func(line int, text string) error) error {
	var (
		cur      string
		curLine  int
		joined   []byte // used only for multi-line logical lines
		multi    bool
		lineno   int
		havePrev bool
	)
	flush := func() error {
		if !havePrev {
			return nil
		}
		havePrev = false
		text := cur
		if multi {
			text = string(joined)
			multi = false
		}
		text = strings.TrimRight(text, " \t\r\n\v\f")
		if !utf8.ValidString(text) {
			return parseErrorf(file, curLine, "invalid UTF-8")
		}
		if strings.IndexByte(text, 0) >= 0 {
			return parseErrorf(file, curLine, "NUL character")
		}
		return fn(curLine, text)
	}
	for len(data) > 0 {
		var phys string
		if i := strings.IndexByte(data, '\n'); i >= 0 {
			phys, data = data[:i], data[i+1:]
		} else {
			phys, data = data, ""
		}
		lineno++
		phys = strings.TrimSuffix(phys, "\r") // CRLF files
		j := 0
		for j < len(phys) && isSpace(phys[j]) {
			j++
		}
		if j == len(phys) || phys[j] == '#' {
			continue // blank or comment line
		}
		if j > 0 {
			if !havePrev {
				return parseErrorf(file, lineno, "line starts with whitespace but there is no preceding line to continue (a line that starts with whitespace continues the previous line)")
			}
			if !multi {
				joined = append(joined[:0], cur...)
				multi = true
			}
			joined = append(joined, phys...)
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		cur, curLine, havePrev = phys, lineno, true
	}
	return flush()
}

// balpar returns the length of the brace-balanced text at the start of s,
// or 0 when s does not start with '{' or is unbalanced (Postfix balpar(3)).
func balpar(s string) int {
	if s == "" || s[0] != '{' {
		return 0
	}
	level := 1
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '}':
			level--
			if level == 0 {
				return i + 1
			}
		case '{':
			level++
		}
	}
	return 0
}

// extpar strips the braces around "{ text }" and the whitespace just inside
// them (Postfix extpar(3) with EXTPAR_FLAG_STRIP).
func extpar(s string) (string, error) {
	if s == "" || s[0] != '{' {
		return "", fmt.Errorf("no '{' at start of text in %q", s)
	}
	n := balpar(s)
	if n == 0 {
		return "", fmt.Errorf("missing '}' in %q", s)
	}
	if n != len(s) {
		return "", fmt.Errorf("syntax error after '}' in %q", s)
	}
	return trimSpace(s[1 : n-1]), nil
}

// SplitList splits a Postfix list value such as "a, b c,d" on commas and
// whitespace, keeping text between balanced braces together, braces
// included: "inline:{ a=b, c=d }, hash:/x" gives "inline:{ a=b, c=d }" and
// "hash:/x". It is Postfix mystrtokq(3) with CHARS_COMMA_SP and "{}"; an
// unbalanced '{' extends its token to the end of s, for the table parser to
// report.
func SplitList(s string) []string {
	var out []string
	i := 0
	for {
		for i < len(s) && isListSep(s[i]) {
			i++
		}
		if i >= len(s) {
			return out
		}
		start, level := i, 0
		for ; i < len(s); i++ {
			c := s[i]
			if c == '{' {
				level++
			} else if level > 0 && c == '}' {
				level--
			} else if level == 0 && isListSep(c) {
				break
			}
		}
		out = append(out, s[start:i])
	}
}

func isListSep(c byte) bool {
	return c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n'
}
