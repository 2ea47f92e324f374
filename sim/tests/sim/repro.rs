//! The reproductions, shortened (`make sim` runs them whole): each must
//! pass its checks. Runs are deterministic, so these are plain tests.

use switchyard_sim::repro::{self, Scale, render};

use crate::common::plugins;

fn reproduce(number: usize) {
    let plan = repro::plans(&plugins(), Scale::Short)
        .expect("plans")
        .into_iter()
        .nth(number - 1)
        .expect("plan");
    let done = repro::run_plans(vec![plan], 1).expect("runs");
    let text = render(&done[0]);
    println!("{text}");
    assert!(
        done[0].checks.iter().all(|c| c.pass) && !done[0].checks.is_empty(),
        "{text}"
    );
}

#[test]
fn supermarket_random_against_two_choices() {
    reproduce(1);
}

#[test]
fn erlang_c_wait_of_the_cores_queue() {
    reproduce(2);
}

#[test]
fn linkerd_slow_backend() {
    reproduce(3);
}

#[test]
fn heterogeneous_fleet() {
    reproduce(4);
}

#[test]
fn model_swapping_rules_and_oracle() {
    reproduce(5);
}

#[test]
fn pick_first_as_ordered_hunting() {
    reproduce(6);
}
