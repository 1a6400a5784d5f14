package statuspage

import (
	"fmt"
	"html/template"
	"strings"
	"time"
)

var funcs = template.FuncMap{
	"ago":     ago,
	"bytes":   fmtBytes,
	"rate":    fmtRate,
	"secs":    fmtSecs,
	"join":    strings.Join,
	"when":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"date":    func(t time.Time) string { return t.UTC().Format("2006-01-02") },
	"num":     fmtNum,
	"dash":    func(s string) string { return dashIf(s) },
	"nonzero": func(t time.Time) bool { return !t.IsZero() },
}

func dashIf(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// ago says how long before now t was ("never" for the zero time).
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmtSecs(int64(now.Sub(t).Seconds())) + " ago"
}

// fmtSecs prints a duration in seconds the way a person reads it: 45s,
// 12m 5s, 3h 4m, 2d 3h.
func fmtSecs(s int64) string {
	if s < 0 {
		s = 0
	}
	d, h, m := s/86400, s/3600%24, s/60%60
	switch {
	case d > 0 && h == 0:
		return fmt.Sprintf("%dd", d)
	case d > 0:
		return fmt.Sprintf("%dd %dh", d, h)
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, s%60)
	}
	return fmt.Sprintf("%ds", s)
}

func fmtBytes(v any) string {
	var b float64
	switch x := v.(type) {
	case uint64:
		b = float64(x)
	case int64:
		b = float64(x)
	case int:
		b = float64(x)
	case float64:
		b = x
	}
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%.0f B", b)
	}
	exp := 0
	for b >= unit && exp < 5 {
		b /= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", b, "KMGTP"[exp-1])
}

func fmtRate(v float64) string { return fmtBytes(v) + "/s" }

func fmtNum(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.1f", v)
}
