//! `exec [-i] [-t] TASK -- CMD [ARGS...]`: runs a process in a running task's container
//! on its node, relaying stdin, stdout and stderr; returns the process's exit code.

use crate::cli::ExecArgs;
use crate::connection::{self, Globals};
use crate::error::{CtlError, Result};
use prost::Message;
use std::io::{Read, Write};
use voiyd_messages::v1::{ExecInput, ExecOutput, ExecRequest, Task};
use voiyd_nats::names;
use voiyd_nats::stream::ClientStream;

/// The size of the terminal on `fd`, if it is one.
fn window_size(fd: impl std::os::fd::AsFd) -> Option<(u32, u32)> {
    let ws = rustix::termios::tcgetwinsize(fd).ok()?;
    (ws.ws_col > 0).then_some((u32::from(ws.ws_col), u32::from(ws.ws_row)))
}

/// Puts the local terminal in raw mode while alive (for `-t`), restoring it on drop.
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enable() -> RawMode {
        use rustix::termios::{tcgetattr, tcsetattr, OptionalActions};
        let stdin = std::io::stdin();
        if !std::io::IsTerminal::is_terminal(&stdin) {
            return RawMode(None);
        }
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        raw.make_raw();
        if tcsetattr(&stdin, OptionalActions::Now, &raw).is_err() {
            return RawMode(None);
        }
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

/// `exec`; returns the remote exit code.
pub async fn run(globals: &Globals, args: &ExecArgs) -> Result<i32> {
    if args.command.is_empty() {
        return Err(CtlError::Usage(
            "give the command after `--`: voiydctl exec TASK -- CMD [ARGS...]".into(),
        ));
    }
    let session = connection::session(globals).await?;
    let task: Task = session.api.get(&args.task).await?;
    let status = task.status.clone().unwrap_or_default();
    if status.node.is_empty() {
        return Err(CtlError::Other(format!(
            "task {} is not on any node (phase {}): nothing to exec in",
            args.task,
            if status.phase.is_empty() {
                voiyd_messages::phase::TaskPhase::Pending.as_str()
            } else {
                &status.phase
            }
        )));
    }
    let node = status.node.clone();
    let nats = session.api.nats().clone();
    let size = if args.tty {
        window_size(std::io::stdout())
    } else {
        None
    };
    let req = ExecRequest {
        args: args.command.clone(),
        stdin: args.interactive,
        tty: args.tty,
        width: size.map(|s| s.0).unwrap_or(0),
        height: size.map(|s| s.1).unwrap_or(0),
        env: Vec::new(),
        deliver_to: String::new(),
    };
    let (mut stream, start) = ClientStream::open(
        &nats,
        &node,
        names::node::exec(&node, &args.task),
        globals.api_timeout,
        |inbox| {
            ExecRequest {
                deliver_to: inbox,
                ..req.clone()
            }
            .encode_to_vec()
        },
    )
    .await
    .map_err(|e| CtlError::Other(e.to_string()))?;
    let input_subject = names::node::exec_input(&node, &args.task, &start.session);
    let _raw = if args.tty && args.interactive {
        Some(RawMode::enable())
    } else {
        None
    };

    // Input: stdin (read on a thread: reads block), resizes and Ctrl-C, in one ordered queue.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ExecInput>(16);
    if args.interactive {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            let mut stdin = std::io::stdin().lock();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(ExecInput {
                            close_stdin: true,
                            ..Default::default()
                        });
                        return;
                    }
                    Ok(n) => {
                        let msg = ExecInput {
                            stdin: buf[..n].to_vec(),
                            ..Default::default()
                        };
                        if tx.blocking_send(msg).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    if args.tty {
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((w, h)) = window_size(std::io::stdout()) {
                    let msg = ExecInput {
                        width: w,
                        height: h,
                        ..Default::default()
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            // Without a terminal, Ctrl-C kills the remote process (its exit code follows).
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = tx
                    .send(ExecInput {
                        kill: true,
                        ..Default::default()
                    })
                    .await;
            }
        });
    }
    drop(tx);
    {
        let nats = nats.clone();
        tokio::spawn(async move {
            while let Some(i) = rx.recv().await {
                if nats
                    .publish(input_subject.clone(), i.encode_to_vec().into())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    loop {
        let out: ExecOutput = stream
            .next()
            .await
            .map_err(|e| CtlError::Other(e.to_string()))?;
        if !out.stdout.is_empty() {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(&out.stdout).and_then(|()| o.flush());
        }
        if !out.stderr.is_empty() {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(&out.stderr).and_then(|()| e.flush());
        }
        if out.exited {
            if !out.error.is_empty() {
                return Err(CtlError::Other(out.error));
            }
            return Ok(out.exit_code);
        }
    }
}
