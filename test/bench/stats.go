package main

import (
	"math"
	"sort"
	"time"
)

// Latency summarises samples in milliseconds.
type Latency struct {
	N       int       `json:"n"`
	P50     float64   `json:"p50_ms"`
	P90     float64   `json:"p90_ms"`
	P99     float64   `json:"p99_ms"`
	Mean    float64   `json:"mean_ms"`
	Min     float64   `json:"min_ms"`
	Max     float64   `json:"max_ms"`
	Samples []float64 `json:"samples_ms,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarise computes the percentiles of samples (ms), keeping them.
func summarise(samples []float64) Latency {
	l := Latency{N: len(samples), Samples: samples}
	if len(samples) == 0 {
		return l
	}
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	l.Mean = round3(sum / float64(len(s)))
	l.Min, l.Max = round3(s[0]), round3(s[len(s)-1])
	l.P50, l.P90, l.P99 = round3(quantile(s, 0.50)), round3(quantile(s, 0.90)), round3(quantile(s, 0.99))
	return l
}

// quantile of sorted s, by linear interpolation between closest ranks.
func quantile(s []float64, q float64) float64 {
	if len(s) == 1 {
		return s[0]
	}
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

func median(samples []float64) float64 {
	if len(samples) == 0 {
		return 0
	}
	s := append([]float64(nil), samples...)
	sort.Float64s(s)
	return round3(quantile(s, 0.5))
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// ratio is a/b, 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*1000) / 1000
}
