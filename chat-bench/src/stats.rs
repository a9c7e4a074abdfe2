//! Resource use read from outside the processes under test: the server's CPU time and RSS from
//! `/proc/<pid>`, and Redis's CPU time and memory from `INFO cpu memory` over a raw RESP
//! connection.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::Result;

/// One reading of a process's CPU time and resident memory.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// utime + stime, in microseconds.
    pub cpu_us: u64,
    /// VmRSS, in KiB.
    pub rss_kib: u64,
}

/// Reads `/proc/<pid>` of the server.
#[derive(Debug, Clone)]
pub struct ProcReader {
    pid: u32,
    ticks_per_sec: u64,
}

impl ProcReader {
    /// Checks that the process exists and reads the clock tick rate once (`getconf CLK_TCK`,
    /// 100 when it cannot be asked: the value on every mainstream Linux).
    pub fn new(pid: u32) -> Result<ProcReader> {
        let ticks_per_sec = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100);
        let reader = ProcReader { pid, ticks_per_sec };
        reader.sample()?;
        Ok(reader)
    }

    pub fn sample(&self) -> Result<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).map_err(|e| {
            format!(
                "cannot read /proc/{}/stat (is --server-pid right?): {e}",
                self.pid
            )
        })?;
        let ticks = parse_stat_cpu_ticks(&stat)
            .ok_or_else(|| format!("unexpected /proc/{}/stat", self.pid))?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map_err(|e| format!("cannot read /proc/{}/status: {e}", self.pid))?;
        let rss_kib = parse_status_rss_kib(&status)
            .ok_or_else(|| format!("no VmRSS in /proc/{}/status", self.pid))?;
        Ok(ProcSample {
            cpu_us: ticks.saturating_mul(1_000_000) / self.ticks_per_sec,
            rss_kib,
        })
    }
}

/// utime + stime (fields 14 and 15) from `/proc/<pid>/stat`. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    // `after` starts at field 3 (state); utime is field 14, i.e. the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_status_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One reading of Redis's `INFO cpu memory`.
#[derive(Debug, Clone, Copy)]
pub struct RedisSample {
    /// used_cpu_sys + used_cpu_user, in microseconds.
    pub cpu_us: u64,
    /// used_memory (the allocator's count of bytes Redis holds: data, overheads, buffers).
    pub used_memory: Option<u64>,
}

/// A Redis to ask for its CPU time and memory. Speaks RESP directly: one command, one bulk
/// reply.
#[derive(Debug, Clone)]
pub struct RedisInfo {
    addr: std::net::SocketAddr,
    password: Option<String>,
    timeout: Duration,
}

impl RedisInfo {
    /// From `redis://[:password@]host:port[/db]`; the host must be loopback.
    pub async fn new(url: &str, timeout: Duration) -> Result<RedisInfo> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("--redis-url must start with redis:// (got {url:?})"))?;
        let rest = rest.split(['/', '?']).next().unwrap_or("");
        let (password, hostport) = match rest.rsplit_once('@') {
            Some((auth, hp)) => {
                let pw = auth.split_once(':').map_or(auth, |(_, p)| p);
                (Some(pw.to_string()).filter(|p| !p.is_empty()), hp)
            }
            None => (None, rest),
        };
        let addr = crate::target::resolve_loopback(hostport, 6379).await?;
        let info = RedisInfo {
            addr,
            password,
            timeout,
        };
        info.sample().await?;
        Ok(info)
    }

    /// used_cpu_sys + used_cpu_user of the Redis process, and its used_memory.
    pub async fn sample(&self) -> Result<RedisSample> {
        let text = tokio::time::timeout(self.timeout, self.info())
            .await
            .map_err(|_| "Redis INFO: no answer in time")?
            .map_err(|e| format!("Redis INFO: {e}"))?;
        let cpu_us =
            parse_info_cpu_us(&text).ok_or("Redis INFO cpu without used_cpu_sys/used_cpu_user")?;
        Ok(RedisSample {
            cpu_us,
            used_memory: parse_info_field(&text, "used_memory"),
        })
    }

    async fn info(&self) -> Result<String> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        let mut conn = BufReader::new(stream);
        if let Some(pw) = &self.password {
            let cmd = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{pw}\r\n", pw.len());
            conn.get_mut().write_all(cmd.as_bytes()).await?;
            let mut line = String::new();
            conn.read_line(&mut line).await?;
            if !line.starts_with('+') {
                return Err(format!("AUTH refused: {}", line.trim_end()).into());
            }
        }
        conn.get_mut()
            .write_all(b"*3\r\n$4\r\nINFO\r\n$3\r\ncpu\r\n$6\r\nmemory\r\n")
            .await?;
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        let len: usize = line
            .strip_prefix('$')
            .and_then(|l| l.trim_end().parse().ok())
            .ok_or_else(|| format!("unexpected reply {:?}", line.trim_end()))?;
        if len > 1 << 20 {
            return Err("INFO reply too large".into());
        }
        let mut body = vec![0; len];
        conn.read_exact(&mut body).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// A field of an INFO reply (`name:value`).
fn parse_info_field<T: std::str::FromStr>(text: &str, name: &str) -> Option<T> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

fn parse_info_cpu_us(text: &str) -> Option<u64> {
    let sys: f64 = parse_info_field(text, "used_cpu_sys")?;
    let user: f64 = parse_info_field(text, "used_cpu_user")?;
    Some(((sys + user) * 1e6).round() as u64)
}

/// Start-of-window readings, to turn into deltas at the end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub server: Option<ProcSample>,
    pub redis_cpu_us: Option<u64>,
    pub redis_used_memory: Option<u64>,
}

/// The optional observers of a run. Several Redis nodes (every node of a cluster, say) are
/// read one after the other and their figures summed.
#[derive(Debug, Clone, Default)]
pub struct Observers {
    pub server: Option<ProcReader>,
    pub redis: Vec<RedisInfo>,
}

impl Observers {
    pub async fn new(args: &crate::CommonArgs) -> Result<Observers> {
        let server = args.server_pid.map(ProcReader::new).transpose()?;
        let mut redis = Vec::new();
        if let Some(urls) = &args.redis_url {
            for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                redis.push(RedisInfo::new(url, args.connect_timeout()).await?);
            }
        }
        Ok(Observers { server, redis })
    }

    pub async fn sample(&self) -> Result<Window> {
        let server = self.server.as_ref().map(ProcReader::sample).transpose()?;
        let mut samples = Vec::with_capacity(self.redis.len());
        for r in &self.redis {
            samples.push(r.sample().await?);
        }
        // Without Redis nodes: no figures; memory only when every node reported it.
        let any = !samples.is_empty();
        Ok(Window {
            server,
            redis_cpu_us: any.then(|| samples.iter().map(|s| s.cpu_us).sum()),
            redis_used_memory: samples
                .iter()
                .map(|s| s.used_memory)
                .sum::<Option<u64>>()
                .filter(|_| any),
        })
    }
}

/// CPU spent between two windows: (server µs, Redis µs).
pub fn cpu_delta(start: &Window, end: &Window) -> (Option<u64>, Option<u64>) {
    let server = match (start.server, end.server) {
        (Some(a), Some(b)) => Some(b.cpu_us.saturating_sub(a.cpu_us)),
        _ => None,
    };
    let redis = match (start.redis_cpu_us, end.redis_cpu_us) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    (server, redis)
}

/// Redis's used_memory growth between two windows, in bytes (negative when it shrank).
pub fn memory_delta(start: &Window, end: &Window) -> Option<i64> {
    match (start.redis_used_memory, end.redis_used_memory) {
        (Some(a), Some(b)) => Some(b as i64 - a as i64),
        _ => None,
    }
}

/// `x / n` for a signed `x`, or `None` when `n` is zero.
pub fn per_signed(x: Option<i64>, n: f64) -> Option<f64> {
    x.filter(|_| n > 0.0).map(|x| x as f64 / n)
}

/// `x / n`, or `None` when `n` is zero.
pub fn per(x: Option<u64>, n: f64) -> Option<f64> {
    x.filter(|_| n > 0.0).map(|x| x as f64 / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "1234 (chat) server)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_and_redis_cpu_are_parsed() {
        assert_eq!(
            parse_status_rss_kib("Name:\tx\nVmRSS:\t  12345 kB\n"),
            Some(12345)
        );
        let info = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:0.250000\r\nused_cpu_sys_children:9\r\n";
        assert_eq!(parse_info_cpu_us(info), Some(1_750_000));
        let info =
            "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nused_memory_rss:2\r\n";
        assert_eq!(parse_info_field(info, "used_memory"), Some(1_048_576u64));
        assert_eq!(parse_info_field::<u64>(info, "used_memory_peak"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let r = ProcReader::new(std::process::id()).unwrap();
        let s = r.sample().unwrap();
        assert!(s.rss_kib > 0);
    }
}
