//! Benchmark peer: a chat server written the way tokio + tokio-tungstenite chat servers usually are, speaking
//! roomcast's JSON protocol (join, chat, leave, ping; `system` and `chat` out) on `/ws`, and echoing on `/echo`.
//!
//! One `current_thread` runtime. Rooms live in a `HashMap` behind a mutex; each connection is a task that reads
//! and parses, plus a writer task fed by an unbounded mpsc channel; a broadcast serialises the message once and
//! sends the `String` to every member's channel, the sender included (as roomcast does).
//!
//! Usage: `tokio-chat` with `PORT` (default 8082) and optionally `HOST` (default 127.0.0.1) in the environment.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{future, SinkExt, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// A message from a client.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Incoming {
    Join {
        #[serde(rename = "userId")]
        user_id: String,
        room: String,
    },
    Chat {
        content: String,
    },
    Leave,
    Ping,
}

/// A message to clients.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Outgoing<'a> {
    System {
        content: String,
    },
    Chat {
        room: &'a str,
        seq: u64,
        from: &'a str,
        content: &'a str,
        timestamp: u64,
    },
    Pong,
}

/// One room: its members' channels by connection id, and the last sequence number.
#[derive(Default)]
struct Room {
    members: HashMap<usize, mpsc::UnboundedSender<String>>,
    seq: u64,
}

type Rooms = Arc<Mutex<HashMap<String, Room>>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8082);
    let listener = TcpListener::bind((host.as_str(), port)).await?;
    println!("tokio-chat listening on {}", listener.local_addr()?);
    let rooms: Rooms = Arc::default();
    let next_id = AtomicUsize::new(0);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(handle(stream, id, rooms.clone()));
    }
}

// The handshake callback's error type is tungstenite's, whatever its size.
#[allow(clippy::result_large_err)]
async fn handle(stream: TcpStream, id: usize, rooms: Rooms) {
    let mut path = String::new();
    let callback = |request: &Request, response: Response| {
        path = request.uri().path().to_owned();
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    if path == "/echo" {
        // The echo server from tokio-tungstenite's examples.
        let _ = stream
            .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
            .forward(sink)
            .await;
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    let mut joined: Option<(String, String)> = None;
    while let Some(Ok(message)) = stream.next().await {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(incoming) = serde_json::from_str::<Incoming>(&text) else {
            continue;
        };
        match incoming {
            Incoming::Join { user_id, room } => {
                if let Some((old_room, user)) = joined.take() {
                    leave(&rooms, &old_room, &user, id);
                }
                let online = {
                    let mut rooms = rooms.lock().unwrap();
                    let entry = rooms.entry(room.clone()).or_default();
                    entry.members.insert(id, tx.clone());
                    entry.members.len()
                };
                let welcome = Outgoing::System {
                    content: format!("Joined room \"{room}\", {online} online"),
                };
                let _ = tx.send(serde_json::to_string(&welcome).unwrap());
                let notice = Outgoing::System {
                    content: format!("User \"{user_id}\" joined the room"),
                };
                broadcast(&rooms, &room, &notice, Some(id));
                joined = Some((room, user_id));
            }
            Incoming::Chat { content } => {
                let Some((room, user)) = &joined else {
                    continue;
                };
                let mut rooms = rooms.lock().unwrap();
                let Some(entry) = rooms.get_mut(room) else {
                    continue;
                };
                entry.seq += 1;
                let payload = serde_json::to_string(&Outgoing::Chat {
                    room,
                    seq: entry.seq,
                    from: user,
                    content: &content,
                    timestamp: unix_ms(),
                })
                .unwrap();
                for member in entry.members.values() {
                    let _ = member.send(payload.clone());
                }
            }
            Incoming::Leave => {
                if let Some((room, user)) = joined.take() {
                    leave(&rooms, &room, &user, id);
                }
            }
            Incoming::Ping => {
                let _ = tx.send(serde_json::to_string(&Outgoing::Pong).unwrap());
            }
        }
    }
    if let Some((room, user)) = joined.take() {
        leave(&rooms, &room, &user, id);
    }
    drop(tx);
    let _ = writer.await;
}

/// Takes `id` out of `room` and tells the others.
fn leave(rooms: &Rooms, room: &str, user: &str, id: usize) {
    {
        let mut rooms = rooms.lock().unwrap();
        if let Some(entry) = rooms.get_mut(room) {
            entry.members.remove(&id);
        }
    }
    let notice = Outgoing::System {
        content: format!("User \"{user}\" left the room"),
    };
    broadcast(rooms, room, &notice, None);
}

/// Serialises `message` once and sends the string to every member of `room` except `except`.
fn broadcast(rooms: &Rooms, room: &str, message: &Outgoing<'_>, except: Option<usize>) {
    let payload = serde_json::to_string(message).unwrap();
    let rooms = rooms.lock().unwrap();
    if let Some(entry) = rooms.get(room) {
        for (id, member) in &entry.members {
            if Some(*id) != except {
                let _ = member.send(payload.clone());
            }
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
