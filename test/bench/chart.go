package main

import (
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	colorCNM = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colorRef = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
)

// groupedBars is a plot of two bars (cnm, ref) per category, each
// labelled with its value.
func groupedBars(title, ylabel string, cats []string, cnm, ref []float64, refLabel string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	p.Y.Min = 0
	top := 0.0
	w := vg.Points(22)
	for i, v := range [][]float64{cnm, ref} {
		bars, err := plotter.NewBarChart(plotter.Values(v), w)
		if err != nil {
			return nil, err
		}
		bars.LineStyle.Width = 0
		bars.Color, bars.Offset = colorCNM, -w/2
		name := "cnm-bridge"
		if i == 1 {
			bars.Color, bars.Offset, name = colorRef, w/2, refLabel
		}
		xys := make(plotter.XYs, len(v))
		texts := make([]string, len(v))
		for j, y := range v {
			xys[j] = plotter.XY{X: float64(j), Y: y}
			texts[j] = valueLabel(y)
			top = max(top, y)
		}
		labels, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: texts})
		if err != nil {
			return nil, err
		}
		for j := range labels.TextStyle {
			labels.TextStyle[j].Font.Size = vg.Points(8)
			labels.TextStyle[j].XAlign = text.XCenter
		}
		labels.Offset = vg.Point{X: bars.Offset, Y: vg.Points(2)}
		p.Add(bars, labels)
		p.Legend.Add(name, bars)
	}
	p.Add(plotter.NewGrid())
	// Room above the bars for the labels and the legend.
	p.Y.Max = top * 1.25
	p.Legend.Top = true
	p.Legend.Left = true
	p.NominalX(cats...)
	return p, nil
}

func valueLabel(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// chart draws the run's headline numbers as four panels of grouped bars:
// sequential ADD+DEL percentiles without and with a published port, the
// burst ADD wall times, and ADD latency by number of endpoints present.
func chart(res *Results, path string) error {
	var plots [][]*plot.Plot
	var row []*plot.Plot
	for _, s := range res.Sequential {
		c, r := s.Systems[sysCNM], s.Systems[sysRef]
		title := "Sequential ADD+DEL"
		if s.Scenario == "port" {
			title += ", one published port"
		}
		p, err := groupedBars(fmt.Sprintf("%s (%d containers per system)", title, s.Containers), "ms",
			[]string{"ADD p50", "DEL p50", "ADD+DEL p50", "ADD+DEL p90", "ADD+DEL p99"},
			[]float64{c.Add.P50, c.Del.P50, c.AddDel.P50, c.AddDel.P90, c.AddDel.P99},
			[]float64{r.Add.P50, r.Del.P50, r.AddDel.P50, r.AddDel.P90, r.AddDel.P99}, r.Label)
		if err != nil {
			return err
		}
		row = append(row, p)
	}
	plots = append(plots, row)
	row = nil
	if len(res.Burst) > 0 {
		var cats []string
		var c, r []float64
		for _, b := range res.Burst {
			cats = append(cats, fmt.Sprintf("ADD %d-wide", b.Width))
			c = append(c, b.Systems[sysCNM].AddWallMs)
			r = append(r, b.Systems[sysRef].AddWallMs)
		}
		for _, b := range res.Burst {
			cats = append(cats, fmt.Sprintf("DEL %d-wide", b.Width))
			c = append(c, b.Systems[sysCNM].DelWallMs)
			r = append(r, b.Systems[sysRef].DelWallMs)
		}
		p, err := groupedBars(fmt.Sprintf("Burst of %d: wall time", res.Burst[0].Size), "ms", cats, c, r, label(sysRef, false))
		if err != nil {
			return err
		}
		row = append(row, p)
	}
	if len(res.Scale) > 0 {
		var cats []string
		var c, r []float64
		for _, l := range res.Scale {
			cats = append(cats, fmt.Sprintf("%d present", l.Endpoints))
			c = append(c, l.Systems[sysCNM].Add.P50)
			r = append(r, l.Systems[sysRef].Add.P50)
		}
		p, err := groupedBars("ADD p50 by endpoints present (/16)", "ms", cats, c, r, label(sysRef, false))
		if err != nil {
			return err
		}
		row = append(row, p)
	}
	if len(row) > 0 {
		for len(row) < len(plots[0]) {
			row = append(row, plot.New())
		}
		plots = append(plots, row)
	}
	cols := len(plots[0])
	img := vgimg.New(vg.Points(float64(520*cols)), vg.Points(float64(400*len(plots)+30)))
	dc := draw.New(img)
	// A white background under the panels, and what was measured where.
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	m := res.Machine
	head := draw.TextStyle{Color: color.Black, Font: font.From(plot.DefaultFont, 11), Handler: plot.DefaultTextHandler,
		XAlign: text.XCenter, YAlign: text.YTop}
	dc.FillText(head, vg.Point{X: dc.Max.X / 2, Y: dc.Max.Y - vg.Points(8)},
		fmt.Sprintf("cnmnet make bench, %s: %d × %s, Linux %s, %s; %s", res.Date[:10], m.CPUs, m.Model, m.Kernel, m.Go, m.RefPlugins))
	t := draw.Tiles{Rows: len(plots), Cols: cols, PadX: vg.Millimeter * 6, PadY: vg.Millimeter * 6,
		PadTop: vg.Points(30), PadBottom: vg.Millimeter * 4, PadLeft: vg.Millimeter * 4, PadRight: vg.Millimeter * 4}
	canvases := plot.Align(plots, t, dc)
	for j := range plots {
		for i := range plots[j] {
			plots[j][i].Draw(canvases[j][i])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
