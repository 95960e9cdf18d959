//! `mqtt-board`: the client component on a Linux board, shaped like mosquitto_pub/sub but
//! resilient (outages are ridden out; QoS 1 lines are acknowledged before exit).

use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mqtt_board::file_config::BoardConfig;
use mqtt_board::{record, LinuxPlatform, Verification};
use mqtt_host::{default_config, Client, ClientEvent, ComponentFile, Device, Qos, Subscription, WillSetting};

#[derive(Parser)]
#[command(name = "mqtt-board", version, about = "Resilient MQTT client (the WebAssembly component) on a Linux board")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Conn {
    /// Connection settings in TOML (keys as the long flags; see the README); flags win.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Broker host [default: localhost].
    #[arg(short = 'H', long = "host")]
    host: Option<String>,
    /// Broker port [default: 1883, or 8883 with TLS].
    #[arg(short, long)]
    port: Option<u16>,
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
    /// Clean session on reconnects (false keeps QoS 1 across outages) [default: true].
    #[arg(long, action = clap::ArgAction::Set)]
    clean: Option<bool>,
    /// Use MQTT 5.
    #[arg(short = 'V', long = "v5")]
    v5: bool,
    #[arg(short = 'u', long)]
    user: Option<String>,
    #[arg(short = 'P', long)]
    password: Option<String>,
    /// Network interface whose link state is reported to the client (default: always up).
    #[arg(long)]
    iface: Option<String>,
    /// Time to wait for a broker response before acting [default: 10000].
    #[arg(long)]
    response_time_ms: Option<u32>,
    /// Last will: topic, payload (QoS 1).
    #[arg(long, num_args = 2, value_names = ["TOPIC", "PAYLOAD"])]
    will: Option<Vec<String>>,
    /// Print connection events to stderr.
    #[arg(short, long)]
    verbose: bool,
}

impl Conn {
    /// The command line over the `--config` file.
    fn settings(&self) -> anyhow::Result<BoardConfig> {
        let file = match &self.config {
            Some(path) => BoardConfig::load(path).map_err(|e| anyhow::anyhow!("--config {e}"))?,
            None => BoardConfig::default(),
        };
        let flag = |b: bool| b.then_some(true);
        let cli = BoardConfig {
            server: self.host.clone(),
            port: self.port.map(Some),
            ssl: flag(self.tls),
            insecure: flag(self.insecure),
            cafile: self.cafile.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            alpn: (!self.alpn.is_empty()).then(|| self.alpn.clone()),
            client_id: self.id.clone(),
            keepalive_secs: self.keepalive,
            clean: self.clean,
            mqttv5: flag(self.v5),
            user: self.user.clone().map(Some),
            password: self.password.clone().map(Some),
            iface: self.iface.clone(),
            response_time_ms: self.response_time_ms,
            will: self.will.as_ref().map(|w| WillSetting { topic: w[0].clone(), payload: w[1].clone(), qos: 1, retain: false, delay_s: None }),
            ..BoardConfig::default()
        };
        Ok(cli.over(file))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Publish a message, each line of stdin, or a counter every interval.
    Pub {
        #[command(flatten)]
        conn: Conn,
        #[arg(short, long)]
        topic: String,
        #[arg(short, long, conflicts_with = "stdin_lines")]
        message: Option<String>,
        #[arg(long = "stdin-lines")]
        stdin_lines: bool,
        #[arg(short, long, default_value_t = 0)]
        qos: u8,
        #[arg(short, long)]
        retain: bool,
        /// With --count: publish a counter every interval (mqtt_as's range.py demo), e.g. 5s, 500ms.
        #[arg(long)]
        interval: Option<String>,
        #[arg(long)]
        count: Option<u64>,
    },
    /// Subscribe and print messages.
    Sub {
        #[command(flatten)]
        conn: Conn,
        #[arg(short, long, required = true)]
        topic: Vec<String>,
        #[arg(short, long, default_value_t = 0)]
        qos: u8,
        /// Print one JSON object per message.
        #[arg(long)]
        json: bool,
        /// Exit after this many messages.
        #[arg(short = 'C', long)]
        count: Option<u64>,
    },
    /// Watch an interface's link and write its outages as a scenario for `mqtt-sim run`.
    Record {
        /// The interface to watch (as in /sys/class/net).
        #[arg(long)]
        iface: String,
        /// The scenario file to write.
        #[arg(long, value_name = "FILE.toml")]
        out: std::path::PathBuf,
        /// Stop after this long (e.g. 90s); otherwise at Ctrl-C.
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
    let settings = c.settings()?;
    let component = ComponentFile::embedded()?;
    let cfg = settings.client_config().map_err(anyhow::Error::msg)?;
    let port = mqtt_host::broker_port(&cfg);
    let verification = if settings.insecure == Some(true) { Verification::Off } else { Verification::On };
    let server = cfg.server.clone();
    let platform = LinuxPlatform::with_verification(vec![(server.clone(), port)], settings.iface.clone(), verification);
    let device = Device::new(&component, Box::new(platform), cfg, "board")?;
    let client = Client::spawn(device);
    client.connect().await?;
    if c.verbose {
        eprintln!("connected to {server}");
    }
    Ok(client)
}

fn report(verbose: bool, e: &ClientEvent) {
    if verbose {
        match e {
            ClientEvent::Up { session_present } => eprintln!("up (session present: {session_present})"),
            ClientEvent::Down(why) => eprintln!("down: {why:?}"),
            ClientEvent::Link(l) => eprintln!("link: {l:?}"),
            ClientEvent::Discarded(n) => eprintln!("discarded so far: {n}"),
            ClientEvent::Auth { reason, data } => eprintln!("auth: reason {reason:#04x}, {} bytes", data.len()),
            ClientEvent::Error(e) => eprintln!("error: {e}"),
            ClientEvent::PublishFailed { token, reason } => eprintln!("publish {token} failed: reason {reason:#04x}"),
            ClientEvent::Message(_) | ClientEvent::Published(_) => {}
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Record { iface, out, duration: limit, every, keepalive, response_time_ms, clean } => {
            let limit = limit.map(|d| duration("--duration", &d)).transpose()?;
            let every = duration("--every", &every)?;
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let rec = record::record(&iface, limit, stop).await;
            let settings = record::ReplaySettings { publish_every_ms: every.as_millis() as u64, keepalive_s: keepalive, response_time_ms, clean };
            std::fs::write(&out, record::scenario_toml(&rec, &settings))?;
            eprintln!("wrote {} ({} outages in {:.1} s)", out.display(), rec.outages().len(), rec.length_ms as f64 / 1000.0);
        }
        Command::Component { out } => {
            std::fs::write(&out, mqtt_host::EMBEDDED_COMPONENT)?;
            println!("wrote {} ({} bytes)", out.display(), mqtt_host::EMBEDDED_COMPONENT.len());
        }
        Command::Pub { conn, topic, message, stdin_lines, qos: q, retain, interval, count } => {
            let q = qos(q)?;
            let mut client = start(&conn).await?;
            // Up/down reported as it happens (range.py's demo prints them between counts).
            let verbose = conn.verbose;
            let mut events = client.take_events();
            let reporter = tokio::spawn(async move {
                while let Some(e) = events.next().await {
                    report(verbose, &e);
                }
            });
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
            let publisher = async {
                while let Some(payload) = rx.recv().await {
                    client.publish(&topic, &payload, q, retain).await?;
                }
                anyhow::Ok(client)
            };
            let producer = async move {
                if stdin_lines {
                    let lines = tokio::task::spawn_blocking(|| std::io::stdin().lock().lines().collect::<Result<Vec<_>, _>>()).await??;
                    for l in lines {
                        tx.send(l.into_bytes())?;
                    }
                } else if let Some(iv) = interval {
                    let every = duration("--interval", &iv)?;
                    let n = count.unwrap_or(u64::MAX);
                    for i in 0..n {
                        tx.send(i.to_string().into_bytes())?;
                        tokio::time::sleep(every).await;
                    }
                } else {
                    tx.send(message.unwrap_or_default().into_bytes())?;
                }
                anyhow::Ok(())
            };
            let (published, produced) = tokio::join!(publisher, producer);
            produced?;
            let client = published?;
            client.disconnect().await;
            reporter.abort();
        }
        Command::Sub { conn, topic, qos: q, json, count } => {
            let q = qos(q)?;
            let mut client = start(&conn).await?;
            let subs =
                topic.iter().map(|t| Subscription { filter: t.clone(), qos: q, no_local: false, retain_as_published: false, retain_handling: 0 }).collect();
            let codes = client.subscribe(subs).await?;
            if conn.verbose {
                eprintln!("subscribed: {codes:?}");
            }
            let mut seen = 0u64;
            while let Some(e) = client.next_event().await {
                report(conn.verbose, &e);
                if let ClientEvent::Message(m) = e {
                    if json {
                        let v = serde_json::json!({ "topic": m.topic, "payload": String::from_utf8_lossy(&m.payload), "retained": m.retained, "dup": m.dup, "qos": m.qos as u8 });
                        println!("{v}");
                    } else {
                        println!("{} {}", m.topic, String::from_utf8_lossy(&m.payload));
                    }
                    seen += 1;
                    if count.is_some_and(|c| seen >= c) {
                        break;
                    }
                }
            }
            client.disconnect().await;
        }
    }
    Ok(())
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
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
