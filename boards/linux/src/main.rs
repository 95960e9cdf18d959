//! `mqtt-board`: the client component on a Linux board, shaped like mosquitto_pub/sub but
//! resilient (outages are ridden out; QoS 1 lines are acknowledged before exit).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mqtt_board::file_config::{BoardConfig, ConfigFile};
use mqtt_board::{mosquitto_style, record, TokioPlatform, Verification};
use mqtt_host::{default_config, Client, ClientEvent, ComponentFile, Config, Device, Qos, Subscription, WillSetting};

#[derive(Parser)]
#[command(name = "mqtt-board", version, about = "Resilient MQTT client (the WebAssembly component) on a Linux board")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Connection flags, mosquitto_pub/mosquitto_sub's where they mean the same.
#[derive(Args, Clone)]
struct Conn {
    /// Connection settings in TOML (the settings schema of the README); flags win.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Broker host [default: localhost].
    #[arg(short = 'h', long = "host", short_alias = 'H')]
    host: Option<String>,
    /// Broker port [default: 1883, or 8883 with TLS].
    #[arg(short, long)]
    port: Option<u16>,
    /// Another broker to fail over to when connecting to the one before it fails, as
    /// HOST or HOST:PORT; repeat for more, tried in order (paho's server list).
    #[arg(long = "failover", value_name = "HOST[:PORT]")]
    failover: Vec<String>,
    /// mqtt(s)://[user[:password]@]host[:port]/topic: host, port, credentials, TLS and topic at once.
    #[arg(short = 'L', long = "url", value_name = "URL")]
    url: Option<String>,
    /// Use TLS, verifying the broker's certificate against the system's roots.
    #[arg(long)]
    tls: bool,
    /// Use TLS WITHOUT checking the broker's certificate or name (test brokers only; every
    /// connection logs a warning). Implies --tls.
    #[arg(long)]
    insecure: bool,
    /// CA certificates (PEM) to trust instead of the system's; implies --tls.
    #[arg(long)]
    cafile: Option<String>,
    /// Client certificate and key (PEM) for mutual TLS; imply --tls.
    #[arg(long)]
    cert: Option<String>,
    #[arg(long)]
    key: Option<String>,
    /// Offer this application protocol in the TLS handshake (ALPN); repeat for several, in
    /// preference order (AWS IoT Core on port 443: `--alpn x-amzn-mqtt-ca`). Implies --tls.
    #[arg(long = "alpn", value_name = "PROTOCOL")]
    alpn: Vec<String>,
    /// Client id [default: mqtt-board-<pid>].
    #[arg(short = 'i', long)]
    id: Option<String>,
    /// Keepalive in seconds [default: 60].
    #[arg(short = 'k', long)]
    keepalive: Option<u16>,
    /// A persistent session (mosquitto's -c): QoS 1/2 kept across outages and runs.
    #[arg(short = 'c', long = "disable-clean-session")]
    persistent: bool,
    /// Clean session (true) or persistent (false) [default: true].
    #[arg(long, action = clap::ArgAction::Set)]
    clean: Option<bool>,
    /// MQTT 5 session expiry interval in seconds (how long a persistent session outlives a
    /// connection).
    #[arg(short = 'x', long = "session-expiry")]
    session_expiry: Option<u32>,
    /// Protocol version: 5 (mqttv5) or 311 (mqttv311) [default: 311].
    #[arg(short = 'V', long = "protocol-version")]
    protocol_version: Option<String>,
    /// Use MQTT 5 (as -V 5).
    #[arg(long = "v5")]
    v5: bool,
    #[arg(short = 'u', long = "username", alias = "user")]
    user: Option<String>,
    /// Password. Visible to every user of the machine in the process list: prefer the
    /// environment variable MQTT_BOARD_PASSWORD or --pw-file (either flag wins over the
    /// variable).
    // Not clap's `env`: clap counts a value from the environment as `-P` given, so an
    // exported MQTT_BOARD_PASSWORD made every `--pw-file` a conflict with a `--pw` the
    // user never typed.
    #[arg(short = 'P', long = "pw", alias = "password")]
    password: Option<String>,
    /// Read the password from the first line of this file.
    #[arg(long = "pw-file", value_name = "FILE", conflicts_with = "password")]
    pw_file: Option<std::path::PathBuf>,
    /// Network interface whose link state is reported to the client (default: always up).
    #[arg(long)]
    iface: Option<String>,
    /// Time to wait for a broker response before acting [default: 10000].
    #[arg(long)]
    response_time_ms: Option<u32>,
    /// Last will: topic and payload (QoS 1; see --will-topic for the rest).
    #[arg(long, num_args = 2, value_names = ["TOPIC", "PAYLOAD"])]
    will: Option<Vec<String>>,
    #[arg(long = "will-topic", conflicts_with = "will")]
    will_topic: Option<String>,
    #[arg(long = "will-payload", requires = "will_topic")]
    will_payload: Option<String>,
    #[arg(long = "will-qos", requires = "will_topic", default_value_t = 1)]
    will_qos: u8,
    #[arg(long = "will-retain", requires = "will_topic")]
    will_retain: bool,
    /// Keep the QoS 1/2 publishes not yet acknowledged in this file (created if missing:
    /// 64 KiB of simulated flash, fsync'd before a publish counts as accepted), so that a
    /// kill, a crash or a power cut loses none of them: the next run with the same file
    /// sends them first, and before it disconnects waits for them to be acknowledged too
    /// (up to --response-time-ms). A damaged file is reported and what is intact is kept; a file that
    /// is not a store is refused and left as it is, and so is one another run holds (it
    /// is locked while in use).
    #[arg(long, value_name = "FILE")]
    store: Option<std::path::PathBuf>,
    /// Print every packet sent and received, and the connection events, with the time, to
    /// stderr (mosquitto's -d).
    #[arg(short = 'd', long = "debug")]
    debug: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

impl Conn {
    /// The command line over the `--config` file, and the client config they make.
    fn settings(&self) -> anyhow::Result<(BoardConfig, Config)> {
        let file = match &self.config {
            Some(path) => Some(ConfigFile::load(path).map_err(|e| anyhow::anyhow!("--config {e}"))?),
            None => None,
        };
        let url = self.url.as_deref().map(mosquitto_style::parse_url).transpose().map_err(anyhow::Error::msg)?;
        let flag = |b: bool| b.then_some(true);
        let password = match &self.pw_file {
            Some(f) => {
                let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("--pw-file {}: {e}", f.display()))?;
                Some(text.lines().next().unwrap_or_default().to_string())
            }
            None => match (&self.password, std::env::var("MQTT_BOARD_PASSWORD")) {
                (Some(p), _) => Some(p.clone()),
                (None, Ok(p)) => Some(p),
                (None, Err(std::env::VarError::NotUnicode(_))) => anyhow::bail!("MQTT_BOARD_PASSWORD is not valid UTF-8"),
                (None, Err(std::env::VarError::NotPresent)) => url.as_ref().and_then(|u| u.password.clone()),
            },
        };
        let v5 = match &self.protocol_version {
            Some(v) => Some(mosquitto_style::is_v5(v).map_err(anyhow::Error::msg)?),
            None => flag(self.v5),
        };
        let will = match (&self.will, &self.will_topic) {
            (Some(w), _) => Some(WillSetting { topic: w[0].clone(), payload: w[1].clone(), qos: 1, retain: false, delay_s: None }),
            (None, Some(t)) => Some(WillSetting {
                topic: t.clone(),
                payload: self.will_payload.clone().unwrap_or_default(),
                qos: self.will_qos,
                retain: self.will_retain,
                delay_s: None,
            }),
            (None, None) => None,
        };
        let cli = BoardConfig {
            server: self.host.clone().or_else(|| url.as_ref().map(|u| u.host.clone())),
            port: self.port.or_else(|| url.as_ref().and_then(|u| u.port)).map(Some),
            servers: (!self.failover.is_empty()).then(|| self.failover.clone()),
            ssl: flag(self.tls || url.as_ref().is_some_and(|u| u.tls)),
            insecure: flag(self.insecure),
            cafile: self.cafile.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            alpn: (!self.alpn.is_empty()).then(|| self.alpn.clone()),
            client_id: self.id.clone(),
            keepalive_secs: self.keepalive,
            clean: if self.persistent { Some(false) } else { self.clean },
            session_expiry_secs: self.session_expiry,
            mqttv5: v5,
            user: self.user.clone().or_else(|| url.as_ref().and_then(|u| u.user.clone())).map(Some),
            password: password.map(Some),
            iface: self.iface.clone(),
            response_time_ms: self.response_time_ms,
            will,
            ..BoardConfig::default()
        };
        let settings = cli.clone().over(file.as_ref().map(|f| f.settings.clone()).unwrap_or_default());
        // Refused here rather than when the client is made, so that a key the file gave is
        // reported at its line.
        match settings.client_config() {
            Ok(cfg) => Ok((settings, cfg)),
            Err(refused) => anyhow::bail!(file.map_or_else(|| refused.why.clone(), |f| f.place(&cli, &refused))),
        }
    }

    /// The topic of `-L`, if given.
    fn url_topic(&self) -> anyhow::Result<Option<String>> {
        Ok(self.url.as_deref().map(mosquitto_style::parse_url).transpose().map_err(anyhow::Error::msg)?.map(|u| u.topic))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Publish a message, a file, stdin, each line of stdin as it comes, or a counter.
    #[command(disable_help_flag = true)]
    Pub {
        #[command(flatten)]
        conn: Conn,
        /// Topic (or the one in -L).
        #[arg(short, long)]
        topic: Option<String>,
        /// The message.
        #[arg(short, long, group = "source")]
        message: Option<String>,
        /// An empty (zero-length) message.
        #[arg(short = 'n', long = "null-message", group = "source")]
        null_message: bool,
        /// The message is this file's contents.
        #[arg(short = 'f', long = "file", group = "source")]
        file: Option<std::path::PathBuf>,
        /// The message is all of stdin.
        #[arg(short = 's', long = "stdin-file", group = "source")]
        stdin_file: bool,
        /// Each line of stdin is a message, published as it arrives, with up to the client's
        /// in-flight window outstanding; the exit status says whether every one was
        /// acknowledged (QoS 1/2) or sent (QoS 0).
        #[arg(short = 'l', long = "stdin-line", alias = "stdin-lines", group = "source")]
        stdin_lines: bool,
        #[arg(short, long, default_value_t = 0)]
        qos: u8,
        #[arg(short, long)]
        retain: bool,
        /// With --count: publish a counter every interval (mqtt_as's range.py demo), e.g. 5s, 500ms.
        #[arg(long, group = "source")]
        interval: Option<String>,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Subscribe and print messages.
    #[command(disable_help_flag = true)]
    Sub {
        #[command(flatten)]
        conn: Conn,
        /// Filters to subscribe to (or the topic in -L).
        #[arg(short, long)]
        topic: Vec<String>,
        /// Filters to unsubscribe from (e.g. to take them out of a persistent session, -c).
        #[arg(short = 'U', long = "unsubscribe")]
        unsubscribe: Vec<String>,
        #[arg(short, long, default_value_t = 0)]
        qos: u8,
        /// Print the topic before the payload.
        #[arg(short = 'v', long = "verbose")]
        verbose: bool,
        /// Print each message in this format: %t topic, %p payload, %l length, %q QoS,
        /// %r retained, %U Unix time, %I ISO 8601 time, %% a percent sign; \n \t escapes.
        #[arg(short = 'F', value_name = "FORMAT")]
        format: Option<String>,
        /// No newline after each message.
        #[arg(short = 'N')]
        no_newline: bool,
        /// Print one JSON object per message: topic, qos, retained, dup, and the payload as
        /// text (`payload`) or, if it is not UTF-8, as base64 (`payload_base64`).
        #[arg(long)]
        json: bool,
        /// Skip messages the broker sends as retained (stale).
        #[arg(short = 'R', long = "no-retained")]
        no_retained: bool,
        /// Exit after this many messages.
        #[arg(short = 'C', long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Exit once the subscriptions (and unsubscriptions) are acknowledged.
        #[arg(short = 'E')]
        exit_when_subscribed: bool,
        /// Give up after this many seconds (exit status 27, as mosquitto_sub's -W).
        #[arg(short = 'W', value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
    },
    /// Watch an interface's link and write its outages as a scenario for `mqtt-sim run`.
    Record {
        /// The interface to watch (as in /sys/class/net).
        #[arg(long)]
        iface: String,
        /// The scenario file to write.
        #[arg(long, value_name = "FILE.toml")]
        out: std::path::PathBuf,
        /// Stop after this long (e.g. 90s); otherwise at Ctrl-C or SIGTERM.
        #[arg(long)]
        duration: Option<String>,
        /// Publish interval of the QoS 1 stream in the replay.
        #[arg(long, default_value = "1s")]
        every: String,
        /// Client settings for the replay, as the board ran with.
        #[arg(short = 'k', long, default_value_t = default_config("", "").keepalive_secs)]
        keepalive: u16,
        #[arg(long, default_value_t = default_config("", "").response_time_ms)]
        response_time_ms: u32,
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
        clean: bool,
    },
    /// Write the component this binary runs.
    Component {
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

fn qos(q: u8) -> anyhow::Result<Qos> {
    mqtt_host::qos_from_level(q).ok_or_else(|| anyhow::anyhow!("--qos {q}: must be 0, 1 or 2"))
}

/// `5s`, `500ms`, `1m 30s`, … (humantime), or a bare number of seconds.
fn duration(flag: &str, s: &str) -> anyhow::Result<Duration> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| anyhow::anyhow!("{flag} {s:?}: {e} (e.g. 5s, 500ms, 1m30s)"))
}

async fn start(c: &Conn) -> anyhow::Result<Client> {
    let (settings, cfg) = c.settings()?;
    let component = ComponentFile::embedded()?;
    let verification = if settings.insecure == Some(true) { Verification::Off } else { Verification::On };
    let server = cfg.server.clone();
    // The component may open these brokers and no other address.
    let mut platform = TokioPlatform::for_config(&cfg).with_verification(verification);
    if let Some(iface) = &settings.iface {
        platform = platform.with_interface(iface.clone());
        if let Some(why) = platform.interface_missing() {
            eprintln!("warning: --iface {iface}: {why}");
        }
    }
    if let Some(path) = &c.store {
        let (flash, repairs) =
            mqtt_host::FileFlash::open(path, mqtt_host::file_flash::DEFAULT_GEOMETRY).map_err(|e| anyhow::anyhow!("--store {}: {e}", path.display()))?;
        for note in repairs.notes {
            eprintln!("warning: --store {note}");
        }
        platform = platform.with_store(flash);
    }
    // -d: every packet, as mosquitto's -d prints them.
    let platform: Box<dyn mqtt_host::Platform> = if c.debug { Box::new(mqtt_host::PacketLog::new(platform, &cfg.client_id)) } else { Box::new(platform) };
    let device = Device::new(&component, platform, cfg, "board")?;
    let client = Client::spawn(device);
    client.connect().await?;
    if c.debug {
        eprintln!("{} connected to {server}", now());
    }
    Ok(client)
}

/// Wall-clock time for event lines (RFC 3339, UTC, milliseconds).
fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// With -d: a connection event on stderr, with the time.
fn report(debug: bool, e: &ClientEvent) {
    if !debug {
        return;
    }
    let line = match e {
        ClientEvent::Up { session_present } => format!("up (session present: {session_present})"),
        ClientEvent::Down(why) => format!("down: {why:?}"),
        ClientEvent::Link(l) => format!("link: {l:?}"),
        ClientEvent::Discarded(n) => format!("discarded so far: {n}"),
        ClientEvent::Auth { reason, data } => format!("auth: reason {reason:#04x}, {} bytes", data.len()),
        ClientEvent::Error(e) => format!("error: {e}"),
        ClientEvent::PublishFailed { token, reason } => format!("publish {token} failed: reason {reason:#04x}"),
        ClientEvent::Published(token) => format!("publish {token} done"),
        ClientEvent::PublishKept(token) => format!("publish {token} kept in the store for the next run"),
        ClientEvent::Refused { token, why } => format!("publish {token} refused: {why}"),
        ClientEvent::Message(m) => format!("message on {} ({} bytes, QoS {})", m.topic, m.payload.len(), m.qos as u8),
    };
    eprintln!("{} {line}", now());
}

/// Resolves at Ctrl-C or SIGTERM: the commands then disconnect cleanly (DISCONNECT sent, so
/// the broker does not publish the will), as mosquitto_pub/sub do; `pub --store` with
/// messages still unacknowledged does not (see there). The handlers are installed
/// when this is called, not at the future's first poll, so a signal that comes between the two
/// (a recording's start line printed, say) is not the default one that kills the process.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let (int, term) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(int) => {}
            _ = wait(term) => {}
        }
    }
}

/// The topic from -t, or from -L.
fn topic_of(conn: &Conn, topic: Option<String>) -> anyhow::Result<String> {
    match topic.or(conn.url_topic()?) {
        Some(t) => Ok(t),
        None => anyhow::bail!("a topic is needed: -t TOPIC, or -L mqtt://host/TOPIC"),
    }
}

/// Publishes each line of stdin as it arrives, keeping up to `window` outstanding; returns how
/// many failed. Reading and publishing overlap, so a live pipe streams. A line is bytes, as
/// mosquitto_pub's are (a payload need not be UTF-8, a `\r` stays), less its `\n`. A read error
/// ends the reading, not what was accepted before it: those are still seen through.
/// `pending` says, whenever this is stopped, how many accepted lines are not yet done.
async fn publish_lines(
    client: &Client,
    events: &mut mqtt_host::Events,
    (topic, q, retain): (&str, Qos, bool),
    window: usize,
    debug: bool,
    pending: &std::cell::Cell<usize>,
) -> anyhow::Result<u64> {
    use tokio::io::AsyncBufReadExt;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    let mut read_error = None;
    let mut accepted = 0u64;
    let mut outstanding = std::collections::BTreeSet::new();
    let mut failed = 0u64;
    let mut settle = |e: ClientEvent, outstanding: &mut std::collections::BTreeSet<u64>| {
        report(debug, &e);
        match e {
            ClientEvent::Published(t) => {
                outstanding.remove(&t);
            }
            ClientEvent::PublishFailed { token, .. } => {
                outstanding.remove(&token);
                failed += 1;
            }
            _ => {}
        }
    };
    let mut open = true;
    while open || !outstanding.is_empty() {
        pending.set(outstanding.len());
        tokio::select! {
            read = stdin.read_until(b'\n', &mut line), if open && outstanding.len() < window => match read {
                // `line`, not the count: a read the other branch cancelled keeps what it had
                // read in `line`, and the call that goes on from there counts only its own.
                Ok(_) if line.is_empty() => open = false,
                Ok(_) => {
                    let mut payload = std::mem::take(&mut line);
                    if payload.last() == Some(&b'\n') {
                        payload.pop();
                    }
                    let shown = debug.then(|| String::from_utf8_lossy(&payload).into_owned());
                    let p = mqtt_host::Publish { topic: topic.to_string(), payload, qos: q, retain, properties: None, deadline_ms: None };
                    // Counted from here: stopped during `enqueue`, it may have been accepted.
                    pending.set(outstanding.len() + 1);
                    let token = client.enqueue(p).await?;
                    if let Some(l) = shown {
                        // Accepted: with --store, durable from here on.
                        eprintln!("{} accepted {l:?} (token {token})", now());
                    }
                    outstanding.insert(token);
                    accepted += 1;
                }
                Err(e) => {
                    read_error = Some(e);
                    open = false;
                }
            },
            e = events.next() => match e {
                Some(e) => settle(e, &mut outstanding),
                None => anyhow::bail!("the client stopped"),
            },
        }
    }
    pending.set(0);
    if let Some(e) = read_error {
        anyhow::bail!("reading stdin: {e}; the {accepted} lines before it were sent ({failed} of them failed)");
    }
    Ok(failed)
}

/// Waits, up to `limit`, until nothing the client holds is waiting for the broker: with a
/// store, the publishes an earlier run left there go out first, and a run that disconnected
/// as soon as its own message was done (at QoS 0, at once) left them unacknowledged, so the
/// next run sent them again: a second copy for every subscriber of each one the broker had.
async fn settle_stored(client: &Client, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while let Some(s) = client.stats().await {
        if s.inflight + s.queued == 0 || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Record { iface, out, duration: limit, every, keepalive, response_time_ms, clean } => {
            let limit = limit.map(|d| duration("--duration", &d)).transpose()?;
            let every = duration("--every", &every)?;
            // Opened before recording, not after: a recording can run for hours, and an
            // `--out` that cannot be written (no such directory, a directory, read-only) would
            // lose all of it at the end. Not truncated until the recording is written.
            let mut file =
                std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&out).map_err(|e| anyhow::anyhow!("--out {}: {e}", out.display()))?;
            let rec = record::record(&iface, limit, stop_signal()).await;
            let settings = record::ReplaySettings { publish_every_ms: every.as_millis() as u64, keepalive_s: keepalive, response_time_ms, clean };
            let toml = record::scenario_toml(&rec, &settings);
            file.set_len(0)
                .and_then(|()| std::io::Write::write_all(&mut file, toml.as_bytes()))
                .map_err(|e| anyhow::anyhow!("writing {}: {e}; the recording was:\n{toml}", out.display()))?;
            eprintln!("wrote {} ({} outages in {:.1} s)", out.display(), rec.outages().len(), rec.length_ms as f64 / 1000.0);
        }
        Command::Component { out } => {
            std::fs::write(&out, mqtt_host::EMBEDDED_COMPONENT)?;
            println!("wrote {} ({} bytes)", out.display(), mqtt_host::EMBEDDED_COMPONENT.len());
        }
        Command::Pub { conn, topic, message, null_message, file, stdin_file, stdin_lines, qos: q, retain, interval, count } => {
            let q = qos(q)?;
            let topic = topic_of(&conn, topic)?;
            let window = usize::from(conn.settings()?.1.max_inflight).max(1);
            let single = if let Some(m) = message {
                Some(m.into_bytes())
            } else if null_message {
                Some(Vec::new())
            } else if let Some(f) = &file {
                Some(std::fs::read(f).map_err(|e| anyhow::anyhow!("-f {}: {e}", f.display()))?)
            } else if stdin_file {
                Some(
                    tokio::task::spawn_blocking(|| {
                        let mut all = Vec::new();
                        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut all).map(|_| all)
                    })
                    .await??,
                )
            } else if !stdin_lines && interval.is_none() {
                anyhow::bail!("nothing to publish: give -m MESSAGE, -n, -f FILE, -s, -l or --interval");
            } else {
                None
            };
            let mut client = start(&conn).await?;
            let mut events = client.take_events();
            let debug = conn.debug;
            // Publishes accepted and not yet done (acknowledged, at QoS 1 and 2) when a
            // signal stops the work: said, and the exit status is not 0.
            let pending = std::cell::Cell::new(0usize);
            let work = async {
                if stdin_lines {
                    return publish_lines(&client, &mut events, (&topic, q, retain), window, debug, &pending).await;
                }
                let reporter = async {
                    while let Some(e) = events.next().await {
                        report(debug, &e);
                    }
                };
                let publishing = async {
                    let one = |payload: Vec<u8>| async {
                        pending.set(1);
                        client.publish(&topic, payload, q, retain).await?;
                        pending.set(0);
                        anyhow::Ok(())
                    };
                    if let Some(payload) = single {
                        one(payload).await?;
                    } else if let Some(iv) = &interval {
                        let every = duration("--interval", iv)?;
                        for i in 0..count.unwrap_or(u64::MAX) {
                            one(i.to_string().into_bytes()).await?;
                            tokio::time::sleep(every).await;
                        }
                    }
                    anyhow::Ok(0u64)
                };
                tokio::select! {
                    r = publishing => r,
                    _ = reporter => anyhow::bail!("the client stopped"),
                }
            };
            let (failed, signalled) = tokio::select! {
                r = work => (r?, false),
                _ = stop_signal() => (0, true),
            };
            let stopped = pending.get();
            if conn.store.is_some() && !signalled {
                // What an earlier run left in the store went out first on this connection;
                // this run's own publishes are done, but those may not be yet.
                settle_stored(&client, Duration::from_millis(conn.settings()?.1.response_time_ms.into())).await;
            }
            // The disconnect leaves the store's records open: what is still waiting goes out
            // with the next run on this store.
            client.disconnect().await;
            if failed > 0 {
                anyhow::bail!("{failed} messages were not acknowledged");
            }
            if stopped > 0 {
                let (done, fate) = match (q, &conn.store) {
                    (Qos::AtMostOnce, _) => ("sent", "QoS 0 is not stored: they are lost"),
                    (_, Some(_)) => ("acknowledged", "kept in --store, the next run with this store sends them"),
                    (_, None) => ("acknowledged", "without --store they are lost"),
                };
                anyhow::bail!("stopped with {stopped} accepted message(s) not yet {done}: {fate}");
            }
        }
        Command::Sub { conn, topic, unsubscribe, qos: q, verbose, format, no_newline, json, no_retained, count, exit_when_subscribed, timeout } => {
            let q = qos(q)?;
            let format = format.unwrap_or_else(|| if verbose { "%t %p".into() } else { "%p".into() });
            let format = mosquitto_style::Format::parse(&format).map_err(anyhow::Error::msg)?;
            let mut filters = topic;
            if filters.is_empty() && unsubscribe.is_empty() {
                filters.push(topic_of(&conn, None)?);
            }
            let mut client = start(&conn).await?;
            if !filters.is_empty() {
                let subs = filters
                    .iter()
                    .map(|t| Subscription { filter: t.clone(), qos: q, no_local: false, retain_as_published: false, retain_handling: 0 })
                    .collect();
                let codes = client.subscribe(subs).await?;
                if conn.debug {
                    eprintln!("{} subscribed: {codes:?}", now());
                }
            }
            if !unsubscribe.is_empty() {
                let codes = client.unsubscribe(unsubscribe).await?;
                if conn.debug {
                    eprintln!("{} unsubscribed: {codes:?}", now());
                }
            }
            if exit_when_subscribed {
                client.disconnect().await;
                return Ok(ExitCode::SUCCESS);
            }
            let mut seen = 0u64;
            // Written, not `println!`ed: `println!` panics when stdout is gone (`| head -1`
            // closes it), where a reader going away is an ordinary end, and a full disk under
            // `> file` is an error to report, both after a clean disconnect.
            let receiving = async {
                use std::io::Write as _;
                while let Some(e) = client.next_event().await {
                    report(conn.debug, &e);
                    let ClientEvent::Message(m) = e else { continue };
                    if no_retained && m.retained {
                        continue;
                    }
                    let mut out = std::io::stdout().lock();
                    if json {
                        let mut v = serde_json::json!({ "topic": m.topic, "retained": m.retained, "dup": m.dup, "qos": m.qos as u8 });
                        // MQTT payloads are bytes: one that is not UTF-8 goes as base64 under a
                        // key of its own. As text, each bad byte became U+FFFD, silently.
                        match std::str::from_utf8(&m.payload) {
                            Ok(text) => v["payload"] = text.into(),
                            Err(_) => {
                                use base64::Engine as _;
                                v["payload_base64"] = base64::engine::general_purpose::STANDARD.encode(&m.payload).into();
                            }
                        }
                        writeln!(out, "{v}")?;
                    } else {
                        let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
                        let r = mosquitto_style::Received { topic: &m.topic, payload: &m.payload, qos: m.qos as u8, retained: m.retained, at_ms };
                        let line = format.render(&r);
                        if no_newline {
                            write!(out, "{line}")?;
                        } else {
                            writeln!(out, "{line}")?;
                        }
                    }
                    out.flush()?;
                    seen += 1;
                    if count.is_some_and(|c| seen >= c) {
                        break;
                    }
                }
                std::io::Result::Ok(())
            };
            let deadline = async {
                match timeout {
                    Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                    None => std::future::pending().await,
                }
            };
            let (timed_out, written) = tokio::select! {
                r = receiving => (false, r),
                _ = stop_signal() => (false, Ok(())),
                _ = deadline => (true, Ok(())),
            };
            client.disconnect().await;
            match written {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => anyhow::bail!("writing to stdout: {e}"),
                _ => {}
            }
            if timed_out {
                eprintln!("Timed out");
                return Ok(ExitCode::from(27));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(run(cli));
    // Not dropped: dropping a runtime waits for its blocking threads, and the one reading
    // stdin for `pub -l` (tokio reads stdin on a thread, with a read nothing can cancel)
    // waits for a line that may never come, so a stopped `pub -l` hung until Enter or EOF.
    // Everything `run` started has ended by now (the client has disconnected).
    rt.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
