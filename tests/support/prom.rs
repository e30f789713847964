//! Reading a Prometheus text exposition in tests with a real parser (the
//! `openmetrics-parser` crate's Prometheus mode: HELP and TYPE checked
//! against the samples, label values with any characters), flattened into
//! samples that are easy to look up.

use std::collections::HashMap;

use openmetrics_parser::{MetricNumber, PrometheusType, PrometheusValue};

/// One sample: a counter, gauge, or a histogram's parts.
#[derive(Debug, Clone)]
pub struct PromSample {
    /// The family's name (a histogram's, without `_bucket`).
    pub family: String,
    /// Labels (a histogram bucket's `le` excluded).
    pub labels: HashMap<String, String>,
    /// The value; a histogram's count.
    pub value: f64,
    /// A histogram's cumulative buckets (upper bound, count) and sum.
    pub histogram: Option<(Vec<(f64, f64)>, f64)>,
}

/// A parsed exposition.
pub struct Prom {
    /// The text as served.
    pub text: String,
    /// Every sample, flattened.
    pub samples: Vec<PromSample>,
    /// Family name → (type, help).
    pub families: HashMap<String, (String, String)>,
}

fn number(n: &MetricNumber) -> f64 {
    match n {
        MetricNumber::Float(f) => *f,
        MetricNumber::Int(i) => *i as f64,
    }
}

/// `GET /metrics` on the admin `endpoint` (answered 200), parsed.
pub fn scrape(endpoint: &ringgate::admin::client::Endpoint) -> Prom {
    let reply =
        ringgate::admin::client::request(endpoint, "GET", "/metrics", None).expect("GET /metrics");
    assert_eq!(reply.status, 200, "GET /metrics");
    Prom::parse(&String::from_utf8(reply.body).expect("UTF-8 metrics"))
}

impl Prom {
    /// Parses `text`, panicking with the parser's complaint if it is not a
    /// valid exposition.
    pub fn parse(text: &str) -> Prom {
        let exposition = openmetrics_parser::prometheus::parse_prometheus(text)
            .unwrap_or_else(|e| panic!("not a valid Prometheus exposition: {e:?}\n{text}"));
        let mut samples = Vec::new();
        let mut families = HashMap::new();
        for (name, family) in &exposition.families {
            let kind = match family.family_type {
                PrometheusType::Counter => "counter",
                PrometheusType::Gauge => "gauge",
                PrometheusType::Histogram => "histogram",
                PrometheusType::Summary => "summary",
                PrometheusType::Unknown => "untyped",
            };
            families.insert(name.clone(), (kind.to_string(), family.help.clone()));
            for s in family.iter_samples() {
                let labels: HashMap<String, String> = s
                    .get_labelset()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let (value, histogram) = match &s.value {
                    PrometheusValue::Unknown(n) | PrometheusValue::Gauge(n) => (number(n), None),
                    PrometheusValue::Counter(c) => (number(&c.value), None),
                    PrometheusValue::Histogram(h) => {
                        let buckets: Vec<(f64, f64)> = h
                            .buckets
                            .iter()
                            .map(|b| (b.upper_bound, number(&b.count)))
                            .collect();
                        let count = h.count.map(|c| c as f64).unwrap_or(f64::NAN);
                        let sum = h.sum.as_ref().map(number).unwrap_or(f64::NAN);
                        (count, Some((buckets, sum)))
                    }
                    PrometheusValue::Summary(_) => (f64::NAN, None),
                };
                samples.push(PromSample {
                    family: name.clone(),
                    labels,
                    value,
                    histogram,
                });
            }
        }
        Prom {
            text: text.to_string(),
            samples,
            families,
        }
    }

    fn matching(&self, family: &str, labels: &[(&str, &str)]) -> Vec<&PromSample> {
        self.samples
            .iter()
            .filter(|s| {
                s.family == family
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The sum of the samples of `family` whose labels include `labels`.
    pub fn sum(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(family, labels).iter().map(|s| s.value).sum()
    }

    /// The one sample of `family` whose labels include `labels`.
    pub fn one(&self, family: &str, labels: &[(&str, &str)]) -> &PromSample {
        let found = self.matching(family, labels);
        assert_eq!(
            found.len(),
            1,
            "{family} {labels:?}: {} samples in\n{}",
            found.len(),
            self.text
        );
        found[0]
    }

    /// The value of [`Prom::one`].
    pub fn value(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        self.one(family, labels).value
    }
}
