//! `supervisor tune` on the example job: a table of real trials, the knee
//! and a recommendation, a plot, and nothing left in the job's folder.

use super::harness::{Scenario, repo_root};

/// The example's folder as it is: names and lengths.
fn listing(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut names: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let len = entry.metadata().map_or(0, |m| m.len());
            (entry.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn tune_on_the_example_recommends_workers_and_a_chunk_and_touches_nothing_of_the_job() {
    let scenario = Scenario::new();
    let examples = repo_root().join("examples");
    let job = examples.join("squares.toml");
    let before = listing(&examples);
    let plot = scenario.path("curve.svg");
    let finished = scenario.run(&[
        "tune",
        "--for",
        "3s",
        "--max-workers",
        "2",
        "--plot",
        plot.to_str().unwrap(),
        job.to_str().unwrap(),
    ]);
    finished.expect_code(0);
    let stdout = String::from_utf8(finished.stdout.clone()).unwrap();
    for knob in ["calibrate", "serial", "workers", "auto"] {
        assert!(
            stdout
                .lines()
                .any(|line| line.split_whitespace().nth(1) == Some(knob)),
            "no {knob} trial:\n{stdout}"
        );
    }
    assert!(stdout.contains("knee: "), "{stdout}");
    let recommendation = stdout
        .lines()
        .find(|line| line.starts_with("recommend: workers = "))
        .unwrap_or_else(|| panic!("no recommendation:\n{stdout}"));
    assert!(recommendation.contains(", chunk = "), "{recommendation}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert_eq!(
        listing(&examples),
        before,
        "tune left something in the job's folder"
    );
    scenario.assert_no_survivors();
}

#[test]
fn a_plot_that_is_neither_svg_nor_png_is_refused_before_any_trial() {
    let scenario = Scenario::new();
    let job = repo_root().join("examples").join("squares.toml");
    let finished = scenario.run(&["tune", "--plot", "curve.gif", job.to_str().unwrap()]);
    finished.expect_code(2);
    assert!(
        finished.stderr.contains(".svg or .png"),
        "{}",
        finished.stderr
    );
    assert!(finished.stdout.is_empty());
}
