//! A small writer for the two text formats `/metrics` speaks (Prometheus
//! text 0.0.4 and OpenMetrics 1.0), used for the per-process families.
//!
//! Why not prometheus-client's encoder for those: at a thousand processes
//! they are some 75 000 lines, and a generic encoder spends most of a scrape
//! re-encoding the same `process="…"` label set through several trait
//! layers. Here each process's labels are rendered once, when it is
//! configured, and a line is a few `push_str`s and one number. The rest of
//! the registry is still encoded by prometheus-client, and both parts are
//! checked by `promtool check metrics` in the tests.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4: no units, no exemplars, counters named `_total` in HELP/TYPE.
    Prometheus,
    /// OpenMetrics 1.0 text: `# UNIT`, exemplars on histogram buckets.
    OpenMetrics,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
}

/// A metric family: its full name (unit suffix included, `_total` not), help and type.
pub struct Desc {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub unit: Option<&'static str>,
}

/// A sample's value.
#[derive(Clone, Copy, Debug)]
pub enum Value {
    Int(i64),
    Uint(u64),
    Float(f64),
}

/// `key="value"`, with the value escaped as both formats require.
pub fn label(key: &str, value: &str) -> String {
    let mut out = String::with_capacity(key.len() + value.len() + 3);
    out.push_str(key);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub struct Writer<'a> {
    out: &'a mut String,
    format: Format,
}

impl<'a> Writer<'a> {
    pub fn new(out: &'a mut String, format: Format) -> Self {
        Writer { out, format }
    }

    /// `# HELP`, `# TYPE` (and in OpenMetrics `# UNIT`) of a family.
    pub fn family(&mut self, d: &Desc) {
        let total = if d.kind == Kind::Counter && self.format == Format::Prometheus {
            "_total"
        } else {
            ""
        };
        let kind = match d.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {}{total} {}", d.name, d.help);
        let _ = writeln!(self.out, "# TYPE {}{total} {kind}", d.name);
        if let (Format::OpenMetrics, Some(unit)) = (self.format, d.unit) {
            let _ = writeln!(self.out, "# UNIT {} {unit}", d.name);
        }
    }

    /// One line: `name{labels[,extra]} value`; a counter's sample is `name_total`.
    pub fn sample(&mut self, d: &Desc, labels: &str, extra: Option<(&str, &str)>, value: Value) {
        self.out.push_str(d.name);
        if d.kind == Kind::Counter {
            self.out.push_str("_total");
        }
        self.labels(labels, extra);
        self.value(value);
        self.out.push('\n');
    }

    /// A histogram's lines for one label set: buckets (cumulative, with
    /// exemplars in OpenMetrics), `_sum` and `_count`.
    pub fn histogram(&mut self, d: &Desc, labels: &str, h: &Histogram) {
        let exemplars = h
            .exemplars
            .as_ref()
            .map(|e| e.lock().unwrap_or_else(|e| e.into_inner()));
        let mut cumulative = 0;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            self.out.push_str(d.name);
            self.out.push_str("_bucket");
            self.labels(labels, Some(("le", h.le(i, self.format))));
            self.value(Value::Uint(cumulative));
            if self.format == Format::OpenMetrics
                && let Some(Some((trace_id, v))) = exemplars.as_ref().map(|e| &e[i])
            {
                self.out.push_str(" # {trace_id=\"");
                self.out.push_str(trace_id);
                self.out.push_str("\"} ");
                self.value(Value::Float(*v));
            }
            self.out.push('\n');
        }
        for (suffix, value) in [
            ("_sum", Value::Float(f64::from_bits(h.sum.load(Ordering::Relaxed)))),
            ("_count", Value::Uint(h.count.load(Ordering::Relaxed))),
        ] {
            self.out.push_str(d.name);
            self.out.push_str(suffix);
            self.labels(labels, None);
            self.value(value);
            self.out.push('\n');
        }
    }

    fn labels(&mut self, labels: &str, extra: Option<(&str, &str)>) {
        self.out.push('{');
        self.out.push_str(labels);
        if let Some((key, value)) = extra {
            self.out.push(',');
            self.out.push_str(key);
            self.out.push_str("=\"");
            self.out.push_str(value);
            self.out.push('"');
        }
        self.out.push_str("} ");
    }

    fn value(&mut self, value: Value) {
        match value {
            Value::Int(v) => self.out.push_str(itoa::Buffer::new().format(v)),
            Value::Uint(v) => self.out.push_str(itoa::Buffer::new().format(v)),
            Value::Float(v) if v.is_finite() => self.out.push_str(dtoa::Buffer::new().format_finite(v)),
            Value::Float(v) if v.is_nan() => self.out.push_str("NaN"),
            Value::Float(v) => self.out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" }),
        }
    }
}

/// The bounds of a histogram's buckets and their `le` labels, rendered once
/// per format: OpenMetrics writes `1.0`, Prometheus text `1` (Go's `%g`, as
/// client_golang and prometheus-client do), so a series keeps its labels
/// whichever format a scraper asks for.
pub struct Buckets {
    bounds: Vec<f64>,
    le_openmetrics: Vec<String>,
    le_prometheus: Vec<String>,
}

impl Buckets {
    pub fn new(bounds: &[f64]) -> Self {
        let render = |f: fn(f64) -> String| bounds.iter().map(|b| f(*b)).chain(["+Inf".to_string()]).collect();
        Buckets {
            bounds: bounds.to_vec(),
            le_openmetrics: render(|b| dtoa::Buffer::new().format(b).to_string()),
            le_prometheus: render(go_float),
        }
    }
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)` for the bounds buckets have:
/// whole numbers without a fraction, plain decimals within [1e-4, 1e6).
fn go_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return itoa::Buffer::new().format(v as i64).to_string();
    }
    if (1e-4..1e6).contains(&v.abs()) {
        return v.to_string();
    }
    let e = format!("{v:e}");
    match e.split_once('e') {
        Some((m, x)) if x.starts_with('-') => format!("{m}e-{:0>2}", &x[1..]),
        Some((m, x)) => format!("{m}e+{x:0>2}"),
        None => e,
    }
}

/// The trace an observation came from, per bucket (OpenMetrics exemplars).
type Exemplars = Mutex<Vec<Option<(String, f64)>>>;

/// A classic histogram: counts per bucket, sum and count, and optionally
/// the last observation's trace in each bucket.
pub struct Histogram {
    buckets: std::sync::Arc<Buckets>,
    /// Per bucket, not cumulative; the last is `+Inf`.
    counts: Box<[AtomicU64]>,
    /// An `f64`'s bits.
    sum: AtomicU64,
    count: AtomicU64,
    exemplars: Option<Exemplars>,
}

impl Histogram {
    pub fn new(buckets: std::sync::Arc<Buckets>, with_exemplars: bool) -> Self {
        let n = buckets.bounds.len() + 1;
        Histogram {
            counts: (0..n).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
            exemplars: with_exemplars.then(|| Mutex::new(vec![None; n])),
            buckets,
        }
    }

    pub fn observe(&self, v: f64, trace_id: Option<String>) {
        let i = self
            .buckets
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.buckets.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self.sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
            Some((f64::from_bits(s) + v).to_bits())
        });
        self.count.fetch_add(1, Ordering::Relaxed);
        if let (Some(exemplars), Some(trace_id)) = (&self.exemplars, trace_id) {
            exemplars.lock().unwrap_or_else(|e| e.into_inner())[i] = Some((trace_id, v));
        }
    }

    fn le(&self, i: usize, format: Format) -> &str {
        match format {
            Format::OpenMetrics => &self.buckets.le_openmetrics[i],
            Format::Prometheus => &self.buckets.le_prometheus[i],
        }
    }
}

/// An `f64` kept in an atomic (gauges and float counters).
#[derive(Default)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    pub fn add(&self, v: f64) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
            Some((f64::from_bits(s) + v).to_bits())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_lines_are_cumulative_and_carry_exemplars_only_in_openmetrics() {
        let h = Histogram::new(std::sync::Arc::new(Buckets::new(&[0.1, 1.0])), true);
        h.observe(0.05, Some("abc".into()));
        h.observe(0.5, None);
        h.observe(7.0, None);
        let d = Desc {
            name: "x_seconds",
            help: "X.",
            kind: Kind::Histogram,
            unit: Some("seconds"),
        };
        let mut om = String::new();
        let mut w = Writer::new(&mut om, Format::OpenMetrics);
        w.family(&d);
        w.histogram(&d, &label("process", "a\"b"), &h);
        assert_eq!(
            om,
            "# HELP x_seconds X.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\n\
             x_seconds_bucket{process=\"a\\\"b\",le=\"0.1\"} 1 # {trace_id=\"abc\"} 0.05\n\
             x_seconds_bucket{process=\"a\\\"b\",le=\"1.0\"} 2\n\
             x_seconds_bucket{process=\"a\\\"b\",le=\"+Inf\"} 3\n\
             x_seconds_sum{process=\"a\\\"b\"} 7.55\n\
             x_seconds_count{process=\"a\\\"b\"} 3\n"
        );
        let mut prom = String::new();
        Writer::new(&mut prom, Format::Prometheus).histogram(&d, "p=\"1\"", &h);
        assert!(!prom.contains('#'), "{prom}");
    }

    #[test]
    fn bucket_bounds_read_as_go_writes_them_in_prometheus_text() {
        let cases = [
            (1.0, "1"),
            (120.0, "120"),
            (0.0001, "0.0001"),
            (2.5, "2.5"),
            (1e6, "1000000"),
            (1.5e-5, "1.5e-05"),
            (2.5e7, "25000000"),
            (1.5e20, "1.5e+20"),
        ];
        for (v, go) in cases {
            assert_eq!(go_float(v), go, "{v}");
        }
    }

    #[test]
    fn counters_are_named_total_where_each_format_wants_it() {
        let d = Desc {
            name: "runs",
            help: "Runs.",
            kind: Kind::Counter,
            unit: None,
        };
        for (format, header) in [
            (
                Format::Prometheus,
                "# HELP runs_total Runs.\n# TYPE runs_total counter\n",
            ),
            (Format::OpenMetrics, "# HELP runs Runs.\n# TYPE runs counter\n"),
        ] {
            let mut out = String::new();
            let mut w = Writer::new(&mut out, format);
            w.family(&d);
            w.sample(&d, "p=\"1\"", Some(("outcome", "error")), Value::Uint(4));
            assert_eq!(out, format!("{header}runs_total{{p=\"1\",outcome=\"error\"}} 4\n"));
        }
    }
}
