use super::*;

const VLLM: &str = include_str!("../testdata/vllm.txt");
const SGLANG: &str = include_str!("../testdata/sglang.txt");

#[test]
fn a_vllm_page_gives_its_three_gauges() {
    let [waiting, running, kv] = gauges(
        VLLM,
        [
            "vllm:num_requests_waiting",
            "vllm:num_requests_running",
            "vllm:gpu_cache_usage_perc",
        ],
    );
    assert_eq!((waiting.sum, waiting.samples), (3.0, 1));
    assert_eq!((running.sum, running.samples), (7.0, 1));
    assert!((kv.max - 0.4217).abs() < 1e-9, "{kv:?}");
}

#[test]
fn an_sglang_page_gives_its_three_gauges() {
    let [waiting, running, kv] = gauges(
        SGLANG,
        [
            "sglang:num_queue_reqs",
            "sglang:num_running_reqs",
            "sglang:token_usage",
        ],
    );
    assert_eq!(waiting.sum, 5.0);
    assert_eq!(running.sum, 12.0);
    assert!((kv.max - 0.18).abs() < 1e-9, "{kv:?}");
}

#[test]
fn label_sets_add_up_and_the_max_is_kept() {
    let text = "\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name=\"a\"} 2
vllm:num_requests_waiting{model_name=\"b\"} 3.0 1712345678901
vllm:num_requests_waiting_bucket{le=\"1\"} 100
vllm:num_requests_waitingX 100
";
    let [g, missing] = gauges(text, ["vllm:num_requests_waiting", "nope"]);
    assert_eq!((g.sum, g.max, g.samples), (5.0, 3.0, 2));
    assert_eq!(missing, Gauge::default());
}

#[test]
fn quoted_label_values_may_hold_braces_spaces_and_escapes() {
    let text = concat!(
        "m{a=\"x} y\",b=\"q\\\"}\\\\\"} 4\n",
        "m{path=\"C:\\\\dir\\\\\"} 1\n",
        "m { } 2\n",
        "m{} 8\n",
    );
    let [g] = gauges(text, ["m"]);
    assert_eq!((g.sum, g.samples), (13.0, 3), "{g:?}");
}

#[test]
fn bad_lines_are_skipped_never_a_panic() {
    let text = "\
m{a=\"never closed 3
m{a=\"1\"}
m NaN
m +Inf
m -Inf
m 1e400
m abc
m\t2.5
{a=\"b\"} 9
9m 9
é 9
m{\u{e9}=\"\u{1f600}\"} 1
\u{0}\u{ffff}
   # comment after spaces
m 0x10
";
    let [g] = gauges(text, ["m"]);
    assert_eq!((g.sum, g.samples), (3.5, 2), "{g:?}");
}

#[test]
fn windows_line_ends_and_blank_lines_are_fine() {
    let [g] = gauges("\r\n\r\nm 1\r\nm{a=\"b\"} 2\r\n", ["m"]);
    assert_eq!(g.sum, 3.0);
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap fuzz: every prefix and suffix of a tricky page.
    let page = format!("{VLLM}{SGLANG}m{{a=\"\\\"}}\" 1\nm{{\"}} 2\n");
    for i in 0..page.len() {
        if page.is_char_boundary(i) {
            let _ = gauges(&page[..i], ["m", "vllm:num_requests_waiting"]);
            let _ = gauges(&page[i..], ["m", "sglang:token_usage"]);
        }
    }
}
