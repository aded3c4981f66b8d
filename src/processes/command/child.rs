//! A child program in its own process group, reaped with `wait4` so its CPU
//! time and peak memory are known, and killed as a group.

use std::fs::File;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::CommandSettings;
use crate::process::ChildUsage;
use crate::telemetry::resources::timeval_seconds;

pub enum Status {
    Exited(i32),
    Signaled(i32),
}

pub struct Exit {
    pub status: Status,
    pub usage: ChildUsage,
}

pub struct Child {
    pgid: i32,
    reaped: Arc<AtomicBool>,
    waiter: Option<JoinHandle<io::Result<Exit>>>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

impl Child {
    pub fn spawn(s: &CommandSettings, extra_env: &[(String, String)]) -> io::Result<Child> {
        let mut cmd = Command::new(&s.command);
        cmd.args(&s.args)
            .envs(&s.env)
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(dir) = &s.working_dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn()?;
        let pid = child.id() as i32;
        let stdout = child.stdout.take().map(|p| File::from(std::os::fd::OwnedFd::from(p)));
        let stderr = child.stderr.take().map(|p| File::from(std::os::fd::OwnedFd::from(p)));
        let reaped = Arc::new(AtomicBool::new(false));
        let flag = reaped.clone();
        // std's Child neither waits nor kills on drop; we reap it ourselves below.
        drop(child);
        let waiter = tokio::task::spawn_blocking(move || {
            let exit = wait4(pid);
            flag.store(true, Ordering::Release);
            exit
        });
        Ok(Child {
            pgid: pid,
            reaped,
            waiter: Some(waiter),
            stdout,
            stderr,
        })
    }

    /// Waits for the program to exit.
    pub async fn wait(&mut self) -> io::Result<Exit> {
        match self.waiter.as_mut() {
            Some(waiter) => {
                let exit = waiter.await.map_err(io::Error::other)?;
                self.waiter = None;
                exit
            }
            None => Err(io::Error::other("already waited")),
        }
    }

    /// SIGTERM to the group, SIGKILL after `grace`, then waits for the program.
    pub async fn stop(&mut self, grace: Duration) {
        self.signal_group(libc::SIGTERM);
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            self.signal_group(libc::SIGKILL);
            let _ = self.wait().await;
        }
        // Members that ignored SIGTERM after the leader exited.
        self.signal_group(libc::SIGKILL);
    }

    fn signal_group(&self, signal: i32) {
        // The group id stays ours while any member lives; after the leader is
        // reaped a stray member may still hold it, and killing it is the point.
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
        unsafe {
            libc::kill(-self.pgid, signal);
        }
    }
}

impl Drop for Child {
    /// A run dropped mid-flight (its future cancelled) leaves no program behind.
    fn drop(&mut self) {
        if !self.reaped.load(Ordering::Acquire) {
            self.signal_group(libc::SIGKILL);
        }
    }
}

fn wait4(pid: i32) -> io::Result<Exit> {
    let mut status = 0;
    // SAFETY: wait4 fills `status` and `ru`, both owned here.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let exit = std::process::ExitStatus::from_raw(status);
    let status = match (exit.code(), exit.signal()) {
        (Some(code), _) => Status::Exited(code),
        (None, Some(signal)) => Status::Signaled(signal),
        (None, None) => Status::Exited(-1),
    };
    let usage = ChildUsage {
        cpu_seconds: timeval_seconds(ru.ru_utime) + timeval_seconds(ru.ru_stime),
        // Linux reports ru_maxrss in KiB.
        peak_rss_bytes: (ru.ru_maxrss.max(0) as u64) * 1024,
    };
    Ok(Exit { status, usage })
}
