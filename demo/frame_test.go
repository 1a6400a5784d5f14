package main

import (
	"strings"
	"testing"
)

// screen is a minimal terminal: width x height cells, autowrap at the
// right margin, scrolling at the bottom, and the four controls frame uses.
type screen struct {
	w, h     int
	rows     [][]rune
	row, col int
}

func newScreen(w, h int) *screen {
	s := &screen{w: w, h: h}
	for range h {
		s.rows = append(s.rows, []rune(strings.Repeat(" ", w)))
	}
	return s
}

func (s *screen) newline() {
	s.col = 0
	if s.row == s.h-1 {
		s.rows = append(s.rows[1:], []rune(strings.Repeat(" ", s.w)))
		return
	}
	s.row++
}

func (s *screen) write(t *testing.T, out string) {
	for len(out) > 0 {
		switch {
		case strings.HasPrefix(out, termHome):
			s.row, s.col = 0, 0
			out = out[len(termHome):]
		case strings.HasPrefix(out, termClearAll):
			for r := range s.rows {
				s.rows[r] = []rune(strings.Repeat(" ", s.w))
			}
			out = out[len(termClearAll):]
		case strings.HasPrefix(out, termClearLine):
			for c := s.col; c < s.w; c++ {
				s.rows[s.row][c] = ' '
			}
			out = out[len(termClearLine):]
		case strings.HasPrefix(out, termClearDown):
			for c := s.col; c < s.w; c++ {
				s.rows[s.row][c] = ' '
			}
			for r := s.row + 1; r < s.h; r++ {
				s.rows[r] = []rune(strings.Repeat(" ", s.w))
			}
			out = out[len(termClearDown):]
		case out[0] == '\x1b':
			t.Fatalf("frame uses a control the test terminal does not know: %q", out[:min(6, len(out))])
		case out[0] == '\n':
			s.newline()
			out = out[1:]
		default:
			r := []rune(out)[0]
			if s.col == s.w { // autowrap
				s.newline()
			}
			s.rows[s.row][s.col] = r
			s.col++
			out = out[len(string(r)):]
		}
	}
}

func (s *screen) text() string {
	var b strings.Builder
	for _, r := range s.rows {
		b.WriteString(strings.TrimRight(string(r), " "))
		b.WriteString("\n")
	}
	return b.String()
}

// TestFrameRedrawsInPlace draws frames whose lines are wider than the
// terminal (they wrap) and then narrower ones, at several widths: the
// screen must hold exactly one title line and nothing of older frames
// (the issue: a trail of "fleetgate demo — N s" lines, one per second).
func TestFrameRedrawsInPlace(t *testing.T) {
	long := strings.Repeat("x", 150)
	for _, width := range []int{40, 80, 200} {
		s := newScreen(width, 30)
		for i := range 10 {
			body := "fleetgate demo — " + strings.Repeat("#", i) + "\n\nUPLINK " + long + "\n"
			if i%2 == 1 {
				body = "fleetgate demo — " + strings.Repeat("#", i) + "\nshort\n"
			}
			s.write(t, frame(body, i == 0))
		}
		got := s.text()
		if n := strings.Count(got, "fleetgate demo"); n != 1 {
			t.Errorf("width %d: %d title lines on the screen, want 1:\n%s", width, n, got)
		}
		if strings.Contains(got, "UPLINK") || !strings.Contains(got, "short") || !strings.Contains(got, strings.Repeat("#", 9)) {
			t.Errorf("width %d: screen is not the last frame:\n%s", width, got)
		}
	}
}
