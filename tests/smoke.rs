//! A first end-to-end check over real sockets: the echo route echoes, the chat route chats.

mod common;

use common::{join, Received, TestServer};

#[test]
fn echo_route_echoes_text_and_binary() {
    let server = TestServer::start();
    let mut client = server.ws("/echo");
    client.send_text("hello");
    assert_eq!(client.recv(), Received::Text("hello".into()));
    client.send_binary(&[0, 1, 2]);
    assert_eq!(client.recv(), Received::Binary(vec![0, 1, 2]));
    client.close(1000);
    assert_eq!(client.recv(), Received::Close(Some(1000)));
    assert_eq!(client.recv(), Received::Eof);
}

#[test]
fn two_members_of_a_room_both_see_a_chat_message() {
    let server = TestServer::start();
    let mut alice = server.ws("/ws");
    let mut bob = server.ws("/ws");
    join(&mut alice, "alice", "lobby");
    join(&mut bob, "bob", "lobby");
    alice.send_json(&serde_json::json!({"type": "chat", "content": "hi bob"}));
    for client in [&mut alice, &mut bob] {
        let msg = client.recv_type("chat");
        assert_eq!(msg["from"], "alice");
        assert_eq!(msg["content"], "hi bob");
        assert_eq!(msg["seq"], 1);
    }
}
