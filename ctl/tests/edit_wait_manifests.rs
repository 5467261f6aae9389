//! edit's read-back, the wait verdicts, and manifest batches checked before sending.

use voiyd_ctl::commands::edit::{edit_text, interpret, run_editor, Edited};
use voiyd_ctl::manifests::parse_all;
use voiyd_ctl::wait::{assess, describe, Goal, Verdict};
use voiyd_messages::manifest::{self, AnyResource};
use voiyd_messages::v1::{Meta, Task, TaskConfig, TaskStatus};

fn task(phase: &str) -> Task {
    Task {
        version: "task/v1".into(),
        meta: Some(Meta {
            name: "web".into(),
            generation: 2,
            resource_version: 9,
            ..Meta::default()
        }),
        config: Some(TaskConfig {
            image: "busybox:test".into(),
            args: vec!["httpd".into()],
            ..TaskConfig::default()
        }),
        status: Some(TaskStatus {
            phase: phase.into(),
            node: "n1".into(),
            observed_generation: 2,
            ..TaskStatus::default()
        }),
    }
}

#[test]
fn edit_round_trip_with_a_scripted_editor() {
    let original = AnyResource::Task(task("Running"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yaml");
    let text = edit_text(&original);
    assert!(
        !text.contains("status"),
        "status is not offered for editing: {text}"
    );
    std::fs::write(&path, &text).unwrap();

    // Untouched: no edits.
    assert_eq!(interpret(&original, &text).unwrap(), Edited::Unchanged);

    // An editor value with arguments runs through the shell.
    run_editor("sed -i s/httpd/echo/", &path).unwrap();
    let edited = std::fs::read_to_string(&path).unwrap();
    match interpret(&original, &edited).unwrap() {
        Edited::Changed(r) => match *r {
            AnyResource::Task(t) => assert_eq!(t.config.unwrap().args, vec!["echo"]),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }

    // A failing editor is an error that keeps the file's path.
    let e = run_editor("false", &path).unwrap_err().to_string();
    assert!(
        e.contains(path.to_str().unwrap()) && e.starts_with("editor `false` exited with"),
        "{e}"
    );

    assert_eq!(
        interpret(&original, "# all gone\n").unwrap(),
        Edited::Cancelled
    );
    let renamed = edited.replace("name: web", "name: other");
    assert_eq!(
        interpret(&original, &renamed).unwrap_err(),
        "the edit turned task/web into task/other: kind and name cannot change (create a new resource with `voiydctl apply` instead)"
    );
    let invalid = edited.replace("image: busybox:test", "image: ''");
    assert!(interpret(&original, &invalid)
        .unwrap_err()
        .contains("image"));
    let two = format!("{edited}---\n{edited}");
    assert!(interpret(&original, &two)
        .unwrap_err()
        .starts_with("the file holds 2 documents"));
}

#[test]
fn wait_verdicts() {
    let t = task("Running");
    assert_eq!(
        assess(Goal::Running, "web", Some(&t), 2),
        Verdict::Done("task/web running on node n1".into())
    );
    // A status observed for an older generation is not believed yet.
    assert!(matches!(
        assess(Goal::Running, "web", Some(&t), 3),
        Verdict::Pending(_)
    ));
    let mut failed = task("Failed");
    failed.status.as_mut().unwrap().reason = "ImagePullFailed".into();
    failed.status.as_mut().unwrap().message = "manifest unknown".into();
    assert_eq!(
        assess(Goal::Running, "web", Some(&failed), 2),
        Verdict::Failed(
            "task web failed: ImagePullFailed: manifest unknown: see `voiydctl events --name web`"
                .into()
        )
    );
    assert!(matches!(
        assess(Goal::Stopped, "web", Some(&failed), 2),
        Verdict::Done(_)
    ));
    assert!(matches!(
        assess(Goal::Stopped, "web", Some(&t), 2),
        Verdict::Pending(_)
    ));
    assert!(matches!(
        assess(Goal::Gone, "web", Some(&t), 0),
        Verdict::Pending(_)
    ));
    assert_eq!(
        assess(Goal::Gone, "web", None, 0),
        Verdict::Done("task/web deleted".into())
    );
    assert!(matches!(
        assess(Goal::Running, "web", None, 0),
        Verdict::Failed(_)
    ));

    // Running but not ready: not there yet.
    let mut unready = task("Running");
    unready.status.as_mut().unwrap().conditions = vec![voiyd_messages::v1::Condition {
        r#type: "Ready".into(),
        status: "False".into(),
        reason: "Unhealthy".into(),
        msg: "readiness probe failed: exit code 1".into(),
        last_transition_time: None,
    }];
    assert_eq!(
        assess(Goal::Running, "web", Some(&unready), 2),
        Verdict::Pending(
            "Running, not ready (Unhealthy: readiness probe failed: exit code 1)".into()
        )
    );
    // Exited non-zero for good: the exit code is the verdict's.
    let mut exited = task("Failed");
    let st = exited.status.as_mut().unwrap();
    (st.exited, st.exit_code, st.reason) = (true, 3, "Error".into());
    assert!(matches!(
        assess(Goal::Running, "web", Some(&exited), 2),
        Verdict::Exited(_, 3)
    ));
    // Crash-looping: said at once, not at the timeout.
    let mut looping = task("Pending");
    let st = looping.status.as_mut().unwrap();
    (st.restart_count, st.exit_code, st.reason) = (2, 1, "BackOff".into());
    match assess(Goal::Running, "web", Some(&looping), 2) {
        Verdict::Failed(m) => assert!(
            m.contains("keeps exiting") && m.contains("restarted 2 times"),
            "{m}"
        ),
        v => panic!("{v:?}"),
    }

    let mut pulling = task("Pulling");
    let st = pulling.status.as_mut().unwrap();
    st.pull_bytes_done = 3 << 20;
    st.pull_bytes_total = 12 << 20;
    assert_eq!(describe(&pulling), "Pulling (3.0/12.0 MiB)");
    let mut empty = task("");
    empty.status = None;
    assert_eq!(describe(&empty), "Pending");
}

#[test]
fn a_bad_document_rejects_the_whole_batch() {
    let good = "version: task/v1\nmeta: {name: first}\nconfig: {image: a}\n";
    let src = |t: &str| vec![("f.yaml".to_string(), t.to_string())];
    assert_eq!(parse_all(&src(good), true).unwrap().len(), 1);

    let e = parse_all(&src(&format!("{good}---\nversion: pod/v1\n")), true)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("f.yaml: document 2: unknown version `pod/v1`"),
        "{e}"
    );
    let e = parse_all(
        &src("version: task/v1\nmeta: {name: 'bad name'}\nconfig: {image: a}\n"),
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("f.yaml: task/bad name: ") && e.contains("name"),
        "{e}"
    );
    let e = parse_all(&src(&format!("{good}---\n{good}")), true)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "f.yaml: task/first appears more than once: keep one definition of each resource"
    );
    let e = parse_all(&src("version: lease/v1\nmeta: {name: l}\n"), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("managed by voiyd-server"), "{e}");
    let e = parse_all(&src("version: task/v1\nconfig: {image: a}\n"), true)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "f.yaml: a task has no meta.name: give every resource a name"
    );
    // JSON arrays, as `get -o json` prints them, are accepted.
    let json = manifest::to_json(&vec![task("Running")]);
    assert_eq!(parse_all(&src(&json), true).unwrap().len(), 1);
}
