//! Test support: SDP fixtures, a tiny answer reader, and an in-memory network on a virtual
//! clock where str0m clients (full ICE, frame mode) talk to the sans-IO endpoint.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use comet_sfu::{AnswerOptions, Endpoint, EndpointConfig, Event, Output, ParticipantId};
use str0m::change::SdpAnswer;
use str0m::media::{Direction as SDirection, MediaKind as SKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output as SOutput, Rtc};

pub const CHROME: &str = include_str!("../data/chrome_audio_video.sdp");
pub const CHROME_AUDIO_ONLY: &str = include_str!("../data/chrome_audio_only_recv_video.sdp");
pub const FIREFOX: &str = include_str!("../data/firefox_audio_video.sdp");
pub const PCMU_ONLY: &str = include_str!("../data/pcmu_only.sdp");

pub fn server_addr() -> SocketAddr {
    "127.0.0.1:20000".parse().unwrap()
}

pub fn config() -> EndpointConfig {
    EndpointConfig {
        candidates: vec![server_addr()],
        ..Default::default()
    }
}

/// An m-line of an SDP answer.
#[derive(Debug, Clone)]
pub struct MLine {
    pub kind: String,
    pub port: u16,
    pub pts: Vec<u8>,
    pub attrs: Vec<String>,
}

impl MLine {
    pub fn has(&self, attr: &str) -> bool {
        self.attrs.iter().any(|a| a == attr)
    }
    pub fn starts(&self, prefix: &str) -> Vec<&str> {
        self.attrs
            .iter()
            .filter(|a| a.starts_with(prefix))
            .map(|a| a.as_str())
            .collect()
    }
    pub fn direction(&self) -> &str {
        self.attrs
            .iter()
            .map(|a| a.as_str())
            .find(|a| matches!(*a, "sendrecv" | "sendonly" | "recvonly" | "inactive"))
            .unwrap_or("sendrecv")
    }
}

/// Session attributes and m-lines of an SDP.
#[derive(Debug, Clone)]
pub struct Sdp {
    pub session: Vec<String>,
    pub mlines: Vec<MLine>,
}

pub fn read_sdp(sdp: &str) -> Sdp {
    let mut session = Vec::new();
    let mut mlines: Vec<MLine> = Vec::new();
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            let parts: Vec<&str> = m.split_whitespace().collect();
            mlines.push(MLine {
                kind: parts[0].to_string(),
                port: parts[1].parse().unwrap(),
                pts: parts[3..].iter().filter_map(|p| p.parse().ok()).collect(),
                attrs: Vec::new(),
            });
        } else if let Some(a) = line.strip_prefix("a=") {
            match mlines.last_mut() {
                Some(m) => m.attrs.push(a.to_string()),
                None => session.push(a.to_string()),
            }
        }
    }
    Sdp { session, mlines }
}

/// A str0m client: full ICE, frame mode, one audio and one video m-line.
pub struct Client {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub id: ParticipantId,
    pub audio: Mid,
    pub video: Mid,
    pub events: Vec<str0m::Event>,
    pub timeout: Instant,
    /// When false its datagrams never reach the endpoint (a peer that went away).
    pub reachable: bool,
    /// Every datagram it sent, for replay and truncation tests.
    pub sent: Vec<Vec<u8>>,
}

impl Client {
    pub fn connected(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, str0m::Event::Connected))
    }
    pub fn closed(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, str0m::Event::Closed))
            || !self.rtc.is_alive()
    }
    pub fn audio_received(&self) -> Vec<&str0m::media::MediaData> {
        self.events
            .iter()
            .filter_map(|e| match e {
                str0m::Event::MediaData(d) if d.mid == self.audio => Some(d),
                _ => None,
            })
            .collect()
    }
}

/// The endpoint and its clients on one in-memory network and a virtual clock.
pub struct Net {
    pub ep: Endpoint,
    pub clients: Vec<Client>,
    pub now: Instant,
    pub events: Vec<(ParticipantId, Event)>,
    /// Loss: datagrams from the endpoint to client `i` for which this returns true vanish.
    pub drop_to_client: Option<DropFilter>,
    /// Loss: datagrams from client `i` to the endpoint for which this returns true vanish.
    pub drop_to_ep: Option<DropFilter>,
}

pub type DropFilter = Box<dyn FnMut(usize, &[u8]) -> bool>;

/// The payload type of an (S)RTP datagram, `None` for anything else (RTCP included).
pub fn rtp_pt(d: &[u8]) -> Option<u8> {
    if d.len() < 12 || !(128..192).contains(&d[0]) {
        return None;
    }
    let pt = d[1] & 0x7f;
    (!(64..96).contains(&pt)).then_some(pt)
}

impl Net {
    pub fn new(config: EndpointConfig) -> Net {
        Net {
            ep: Endpoint::new(config).unwrap(),
            clients: Vec::new(),
            now: Instant::now(),
            events: Vec::new(),
            drop_to_client: None,
            drop_to_ep: None,
        }
    }

    /// A str0m client offering audio + video sendrecv (all its default codecs), answered by the
    /// endpoint with `opts`. Returns its index.
    pub fn add_client(&mut self, opts: AnswerOptions) -> usize {
        let n = self.clients.len();
        let addr: SocketAddr = format!("127.0.0.1:{}", 40000 + n).parse().unwrap();
        let mut rtc = Rtc::builder().build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let audio = api.add_media(SKind::Audio, SDirection::SendRecv, None, None, None);
        let video = api.add_media(SKind::Video, SDirection::SendRecv, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let answer = self
            .ep
            .accept_offer(&offer.to_sdp_string(), opts, self.now)
            .unwrap();
        let sdp = SdpAnswer::from_sdp_string(&answer.sdp).unwrap();
        rtc.sdp_api().accept_answer(pending, sdp).unwrap();
        self.clients.push(Client {
            rtc,
            addr,
            id: answer.participant,
            audio,
            video,
            events: Vec::new(),
            timeout: self.now,
            reachable: true,
            sent: Vec::new(),
        });
        self.drain_client(n);
        n
    }

    /// Poll client `i` to its timeout; returns the datagrams it sends (not delivered yet).
    pub fn drain_client(&mut self, i: usize) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let c = &mut self.clients[i];
        loop {
            match c.rtc.poll_output() {
                Ok(SOutput::Timeout(t)) => {
                    c.timeout = t;
                    break;
                }
                Ok(SOutput::Transmit(t)) => {
                    let bytes: Vec<u8> = t.contents.into();
                    c.sent.push(bytes.clone());
                    let dropped = self.drop_to_ep.as_mut().is_some_and(|f| f(i, &bytes));
                    if c.reachable && !dropped {
                        out.push((t.source, t.destination, bytes));
                    }
                }
                Ok(SOutput::Event(e)) => c.events.push(e),
                Err(_) => {
                    c.timeout = self.now + Duration::from_secs(3600);
                    break;
                }
            }
        }
        out
    }

    /// Hand a datagram from the endpoint to the client it is addressed to.
    pub fn deliver_to_client(&mut self, t: &comet_sfu::Transmit) {
        if let Some(i) = self.clients.iter().position(|c| c.addr == t.to) {
            let c = &mut self.clients[i];
            if c.rtc.is_alive()
                && let Ok(r) = Receive::new(Protocol::Udp, t.from, t.to, &t.bytes)
            {
                let _ = c.rtc.handle_input(Input::Receive(self.now, r));
            }
            for (from, to, bytes) in self.drain_client(i) {
                self.ep.handle_datagram(from, to, &bytes, self.now);
            }
        }
    }

    /// Exchange everything that can be exchanged at the current time.
    pub fn settle(&mut self) {
        let mut to_ep: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
        for i in 0..self.clients.len() {
            to_ep.extend(self.drain_client(i));
        }
        loop {
            for (from, to, bytes) in to_ep.drain(..) {
                self.ep.handle_datagram(from, to, &bytes, self.now);
            }
            let mut progressed = false;
            loop {
                match self.ep.poll_output(self.now) {
                    Output::Transmit(t) => {
                        progressed = true;
                        if let Some(i) = self.clients.iter().position(|c| c.addr == t.to) {
                            if self.drop_to_client.as_mut().is_some_and(|f| f(i, &t.bytes)) {
                                continue;
                            }
                            let c = &mut self.clients[i];
                            if c.rtc.is_alive()
                                && let Ok(r) = Receive::new(Protocol::Udp, t.from, t.to, &t.bytes)
                            {
                                let _ = c.rtc.handle_input(Input::Receive(self.now, r));
                            }
                            to_ep.extend(self.drain_client(i));
                        }
                    }
                    Output::Event(id, e) => self.events.push((id, e)),
                    Output::Timeout(_) => break,
                }
            }
            if !progressed && to_ep.is_empty() {
                break;
            }
        }
    }

    fn next_timeout(&mut self) -> Instant {
        let mut t = match self.ep.poll_output(self.now) {
            Output::Timeout(t) => t,
            // Unreachable after settle(); be safe.
            _ => self.now,
        };
        for c in &self.clients {
            if c.rtc.is_alive() {
                t = t.min(c.timeout);
            }
        }
        t
    }

    /// Run the virtual clock forward by `d`, firing every timeout on the way.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        self.settle();
        while self.now < target {
            let next = self
                .next_timeout()
                .max(self.now + Duration::from_millis(1))
                .min(target);
            self.now = next;
            self.ep.handle_timeout(self.now);
            for i in 0..self.clients.len() {
                let c = &mut self.clients[i];
                if c.rtc.is_alive() && c.timeout <= self.now {
                    let _ = c.rtc.handle_input(Input::Timeout(self.now));
                }
            }
            self.settle();
        }
    }

    /// Advance in steps until `cond` holds or `limit` of virtual time passed.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Net) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if cond(self) {
                return true;
            }
            self.advance(Duration::from_millis(10));
        }
        cond(self)
    }

    pub fn events_of(&self, id: ParticipantId) -> impl Iterator<Item = &Event> {
        self.events
            .iter()
            .filter(move |(i, _)| *i == id)
            .map(|(_, e)| e)
    }

    pub fn connect_all(&mut self) {
        let ids: Vec<ParticipantId> = self.clients.iter().map(|c| c.id).collect();
        let ok = self.run_until(Duration::from_secs(5), |n| {
            ids.iter().all(|id| n.ep.is_connected(*id)) && n.clients.iter().all(|c| c.connected())
        });
        assert!(ok, "not all connected: {:?}", self.events);
    }
}
