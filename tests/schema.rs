//! The protocol's JSON Schemas (`docs/schema/`) held against a real server and against `docs/protocol.md`.
//!
//! Owns the proof that the documentation describes the wire: a scripted session makes an in-process server send
//! every message type in both dialects, and every error code in both forms, and validates each message received
//! against the schema named by its `type` (a field the schema does not know, or a type without a schema, fails);
//! the schemas themselves are checked for strictness; every JSON example in the protocol doc is validated against
//! the schema of its direction; and the doc's example exchange is replayed against a server, line by line. It must
//! not test chat behaviour beyond what makes a message appear: `tests/chat.rs` and `tests/chat_history.rs` own that.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use boon::{Compiler, SchemaIndex, Schemas};
use serde_json::{json, Value};

use common::chat::QUIET;
use common::{Received, TestClient, TestServer};

/// The draft every schema file must declare.
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Which way a message travels, which picks the folder of its schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Direction {
    ServerToClient,
    ClientToServer,
}

impl Direction {
    const BOTH: [Direction; 2] = [Direction::ServerToClient, Direction::ClientToServer];

    /// The folder under `docs/schema/` holding this direction's schemas.
    fn folder(self) -> &'static str {
        match self {
            Direction::ServerToClient => "server",
            Direction::ClientToServer => "client",
        }
    }
}

/// A path inside the repository, wherever the test runs from.
fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The `.json` files directly in `dir`, sorted.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

/// A JSON file, parsed.
fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The message type a schema file is for: its file name without `.json`.
fn type_of_file(path: &Path) -> String {
    path.file_stem()
        .and_then(|stem| stem.to_str())
        .expect("a UTF-8 file name")
        .to_owned()
}

/// Every schema of `docs/schema/`, compiled, by direction and message type.
struct Catalog {
    schemas: Schemas,
    by_type: BTreeMap<(Direction, String), SchemaIndex>,
}

impl Catalog {
    /// Compiles every schema file; panics on one that does not compile.
    fn load() -> Catalog {
        let mut compiler = Compiler::new();
        let mut schemas = Schemas::new();
        let mut by_type = BTreeMap::new();
        for direction in Direction::BOTH {
            let dir = repo_path("docs/schema").join(direction.folder());
            for path in json_files(&dir) {
                let location = path.to_str().expect("a UTF-8 path");
                let index = compiler
                    .compile(location, &mut schemas)
                    .unwrap_or_else(|e| panic!("{location} does not compile: {e:#}"));
                by_type.insert((direction, type_of_file(&path)), index);
            }
        }
        Catalog { schemas, by_type }
    }

    /// The message types with a schema in `direction`.
    fn types(&self, direction: Direction) -> BTreeSet<String> {
        self.by_type
            .keys()
            .filter(|(d, _)| *d == direction)
            .map(|(_, kind)| kind.clone())
            .collect()
    }

    /// Checks one message: a JSON object whose `type` has a schema in `direction`, and that is valid against it.
    fn check(&self, direction: Direction, message: &Value) -> Result<(), String> {
        let kind = message
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no string \"type\" in {message}"))?;
        let index = self
            .by_type
            .get(&(direction, kind.to_owned()))
            .ok_or_else(|| {
                format!(
                    "no schema in docs/schema/{}/ for type {kind:?}: {message}",
                    direction.folder()
                )
            })?;
        self.schemas
            .validate(message, *index)
            .map_err(|e| format!("{message}\n{e:#}"))
    }
}

/// The error codes the schemas know, from the `errorCode` enum of `common.json`.
fn documented_error_codes() -> Vec<String> {
    let common = read_json(&repo_path("docs/schema/common.json"));
    common["$defs"]["errorCode"]["enum"]
        .as_array()
        .expect("common.json has $defs/errorCode/enum")
        .iter()
        .map(|code| code.as_str().expect("a string code").to_owned())
        .collect()
}

// ---------- the checker itself ----------

#[test]
fn a_field_the_schema_does_not_know_fails_validation() {
    let catalog = Catalog::load();
    let valid = [
        json!({"type": "pong"}),
        json!({"type": "system", "content": "User \"ann\" joined the room"}),
        json!({"type": "presence", "room": "lobby", "left": "ann", "count": 1}),
        json!({"type": "error", "code": "not_joined", "message": "join a room first"}),
    ];
    for message in valid {
        assert_eq!(
            catalog.check(Direction::ServerToClient, &message),
            Ok(()),
            "{message}"
        );
        let mut extended = message.clone();
        extended["surprise"] = json!(1);
        assert!(
            catalog.check(Direction::ServerToClient, &extended).is_err(),
            "{extended} passed"
        );
    }
    let mut joined = json!({"type": "joined", "room": "r", "userId": "a", "members": ["a"],
        "memberCount": 1, "epoch": "0123456789abcdef", "seq": 0, "session": "NrN8o3rY0UwSfh6gc2agWF0qPGo",
        "replay": {"complete": true, "count": 0}});
    assert_eq!(catalog.check(Direction::ServerToClient, &joined), Ok(()));
    joined["replay"]["extra"] = json!(true);
    assert!(catalog.check(Direction::ServerToClient, &joined).is_err());
}

#[test]
fn a_type_without_a_schema_fails_validation() {
    let catalog = Catalog::load();
    for message in [
        json!({"type": "whisper", "content": "x"}),
        json!({"content": "no type"}),
        json!({"type": 3}),
    ] {
        assert!(
            catalog.check(Direction::ServerToClient, &message).is_err(),
            "{message}"
        );
    }
    // A client type is not a server type.
    assert!(catalog
        .check(Direction::ServerToClient, &json!({"type": "ping"}))
        .is_err());
}

#[test]
fn wrong_field_types_and_shapes_fail_validation() {
    let catalog = Catalog::load();
    for message in [
        json!({"type": "chat", "room": "r", "seq": "1", "from": "a", "content": "x", "timestamp": 1}),
        json!({"type": "chat", "room": "r", "seq": 0, "from": "a", "content": "x", "timestamp": 1}),
        json!({"type": "chat", "room": "r", "seq": 1, "from": "a", "content": "x", "timestamp": -1}),
        json!({"type": "chat", "from": "a", "content": "x", "timestamp": 1, "private": false}),
        json!({"type": "presence", "room": "r", "joined": "a", "left": "b", "count": 1}),
        json!({"type": "presence", "room": "r", "joined": "a"}),
        json!({"type": "system", "content": "Error: x", "code": "invalid_json"}),
        json!({"type": "error", "code": "no_such_code", "message": "m"}),
        json!({"type": "dm", "from": "a", "to": "a\u{7}", "content": "x", "timestamp": 1}),
        json!({"type": "dm", "from": "a", "to": "b", "content": "", "timestamp": 1}),
    ] {
        assert!(
            catalog.check(Direction::ServerToClient, &message).is_err(),
            "{message} passed"
        );
    }
    let replay = |replay: Value| {
        json!({"type": "joined", "room": "r", "userId": "a", "members": ["a"], "memberCount": 1,
            "epoch": "0123456789abcdef", "seq": 0, "session": "NrN8o3rY0UwSfh6gc2agWF0qPGo", "replay": replay})
    };
    let check = |message: &Value| catalog.check(Direction::ServerToClient, message);
    assert!(check(&replay(
        json!({"complete": false, "reason": "gap", "count": 2})
    ))
    .is_ok());
    assert!(check(&replay(json!({"complete": false, "count": 2}))).is_err());
    assert!(check(&replay(
        json!({"complete": true, "reason": "gap", "count": 2})
    ))
    .is_err());
    for request in [
        json!({"type": "join", "userId": "", "room": "r"}),
        json!({"type": "join", "userId": "a".repeat(33), "room": "r"}),
        json!({"type": "join", "userId": "a", "room": "r", "v": "2"}),
        json!({"type": "join", "userId": "a", "room": "r", "since": {"epoch": "e"}}),
        json!({"type": "chat", "content": "x".repeat(4001)}),
        json!({"type": "leave", "room": "r"}),
    ] {
        assert!(
            catalog.check(Direction::ClientToServer, &request).is_err(),
            "{request} passed"
        );
    }
    // Lengths count Unicode scalar values, as the server does: 32 emoji are a valid userId.
    assert_eq!(
        catalog.check(
            Direction::ClientToServer,
            &json!({"type": "join", "userId": "😀".repeat(32), "room": "r"})
        ),
        Ok(())
    );
}

// ---------- the schemas ----------

/// Walks a schema and pushes what makes it lax into `problems`: every subschema declaring `"type": "object"` must
/// list its `properties` and `required` fields and refuse others, and every `type` property must be a required
/// string `const`, which is pushed into `consts`.
fn strictness_problems(
    schema: &Value,
    at: &str,
    consts: &mut Vec<String>,
    problems: &mut Vec<String>,
) {
    match schema {
        Value::Object(map) => {
            if map.get("type") == Some(&json!("object")) {
                if !map.get("properties").is_some_and(Value::is_object) {
                    problems.push(format!("{at}: an object schema without properties"));
                }
                if !map.get("required").is_some_and(Value::is_array) {
                    problems.push(format!("{at}: an object schema without required"));
                }
                if map.get("additionalProperties") != Some(&json!(false)) {
                    problems.push(format!(
                        "{at}: an object schema without additionalProperties: false"
                    ));
                }
            }
            if let Some(kind) = map.get("properties").and_then(|p| p.get("type")) {
                match kind.get("const").and_then(Value::as_str) {
                    Some(value) => consts.push(value.to_owned()),
                    None => problems.push(format!("{at}: the type property is not a string const")),
                }
                let required = map.get("required").and_then(Value::as_array);
                if !required.is_some_and(|r| r.contains(&json!("type"))) {
                    problems.push(format!("{at}: type is not required"));
                }
            }
            for (key, value) in map {
                strictness_problems(value, &format!("{at}/{key}"), consts, problems);
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                strictness_problems(value, &format!("{at}/{i}"), consts, problems);
            }
        }
        _ => {}
    }
}

#[test]
fn every_schema_is_strict_and_names_the_type_of_its_file() {
    let mut problems = Vec::new();
    let common = repo_path("docs/schema/common.json");
    let mut files = vec![common.clone()];
    for direction in Direction::BOTH {
        let found = json_files(&repo_path("docs/schema").join(direction.folder()));
        assert!(!found.is_empty(), "no {} schemas", direction.folder());
        files.extend(found);
    }
    for path in files {
        let schema = read_json(&path);
        let name = path.display().to_string();
        if schema["$schema"] != DRAFT_2020_12 {
            problems.push(format!("{name}: $schema is not {DRAFT_2020_12}"));
        }
        let mut consts = Vec::new();
        strictness_problems(&schema, &name, &mut consts, &mut problems);
        if path == common {
            continue;
        }
        let kind = type_of_file(&path);
        if consts.is_empty() || consts.iter().any(|c| *c != kind) {
            problems.push(format!(
                "{name}: type consts {consts:?} are not all {kind:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // And every file compiles (boon checks each against the draft's meta-schema).
    let catalog = Catalog::load();
    assert!(catalog.types(Direction::ServerToClient).contains("joined"));
}

#[test]
fn the_protocol_doc_links_every_schema() {
    let doc = fs::read_to_string(repo_path("docs/protocol.md")).expect("docs/protocol.md");
    let mut missing = Vec::new();
    let mut targets = vec!["schema/common.json".to_owned()];
    for direction in Direction::BOTH {
        for path in json_files(&repo_path("docs/schema").join(direction.folder())) {
            targets.push(format!(
                "schema/{}/{}.json",
                direction.folder(),
                type_of_file(&path)
            ));
        }
    }
    for target in targets {
        if !doc.contains(&format!("]({target})")) {
            missing.push(target);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/protocol.md does not link {missing:?}"
    );
}

// ---------- the examples of docs/protocol.md ----------

/// A fenced code block: its info string and its lines.
struct Block {
    info: String,
    lines: Vec<String>,
}

/// The fenced code blocks of a Markdown text, in order.
fn fenced_blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for line in doc.lines() {
        match (line.strip_prefix("```"), open.take()) {
            (Some(info), None) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    lines: Vec::new(),
                })
            }
            (Some(_), Some(block)) => blocks.push(block),
            (None, Some(mut block)) => {
                block.lines.push(line.to_owned());
                open = Some(block);
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block in docs/protocol.md");
    blocks
}

/// The text of `docs/protocol.md`.
fn protocol_doc() -> String {
    fs::read_to_string(repo_path("docs/protocol.md")).expect("docs/protocol.md")
}

/// One line of an example exchange: `who -> {json}`, `who <- {json}` or `who <- Close CODE reason`.
#[derive(Clone, Debug)]
enum Step {
    Send { who: String, message: Value },
    Receive { who: String, message: Value },
    Close { who: String, code: u16 },
}

/// The exchange lines of every code block of the doc, in order.
fn exchange_steps(doc: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for block in fenced_blocks(doc) {
        for line in &block.lines {
            let Some((who, rest)) = line.split_once(' ') else {
                continue;
            };
            if who.is_empty() || !who.chars().all(|c| c.is_ascii_alphanumeric()) {
                continue;
            }
            let parse = |text: &str| -> Value {
                serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            };
            let who = who.to_owned();
            if let Some(text) = rest.strip_prefix("-> ") {
                steps.push(Step::Send {
                    who,
                    message: parse(text),
                });
            } else if let Some(close) = rest.strip_prefix("<- Close ") {
                let code = close
                    .split(' ')
                    .next()
                    .and_then(|code| code.parse().ok())
                    .unwrap_or_else(|| panic!("no close code: {line}"));
                steps.push(Step::Close { who, code });
            } else if let Some(text) = rest.strip_prefix("<- ") {
                steps.push(Step::Receive {
                    who,
                    message: parse(text),
                });
            }
        }
    }
    steps
}

/// Whether the doc answers `who`'s request with an error: the next line `who` receives is an `error`, or a `system`
/// line with `error: true`. Such a request is a deliberate mistake.
fn answered_with_error(later: &[Step], who: &str) -> bool {
    later.iter().find_map(|step| match step {
        Step::Receive { who: to, message } if to == who => {
            Some(message["type"] == "error" || message["error"] == true)
        }
        Step::Close { who: to, .. } if to == who => Some(false),
        _ => None,
    }) == Some(true)
}

/// The doc's examples checked so far: the types shown per direction, and what failed.
#[derive(Default)]
struct Examples {
    shown: BTreeMap<Direction, BTreeSet<String>>,
    failures: Vec<String>,
}

impl Examples {
    /// Checks one example and notes its type as shown.
    fn check(&mut self, catalog: &Catalog, direction: Direction, message: &Value) {
        if let Err(e) = catalog.check(direction, message) {
            self.failures.push(e);
        }
        if let Some(kind) = message["type"].as_str() {
            self.shown
                .entry(direction)
                .or_default()
                .insert(kind.to_owned());
        }
    }
}

#[test]
fn the_json_examples_in_the_protocol_doc_match_the_schemas() {
    let catalog = Catalog::load();
    let doc = protocol_doc();
    let mut examples = Examples::default();
    for block in fenced_blocks(&doc) {
        let mut words = block.info.split_whitespace();
        if words.next() != Some("json") {
            continue;
        }
        let direction = match words.next() {
            Some("client") => Direction::ClientToServer,
            Some("server") => Direction::ServerToClient,
            other => panic!("a json block must say `json client` or `json server`, not {other:?}"),
        };
        let text = block.lines.join("\n");
        for message in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
            let message =
                message.unwrap_or_else(|e| panic!("a json block is not JSON ({e}):\n{text}"));
            examples.check(&catalog, direction, &message);
        }
    }
    let steps = exchange_steps(&doc);
    assert!(steps.len() > 20, "the example exchange was not found");
    for (i, step) in steps.iter().enumerate() {
        match step {
            // A mistake in the exchange must be one the schema refuses too.
            Step::Send { who, message } if answered_with_error(&steps[i + 1..], who) => {
                if catalog.check(Direction::ClientToServer, message).is_ok() {
                    examples.failures.push(format!(
                        "{message}: the doc answers it with an error, but its schema accepts it"
                    ));
                }
            }
            Step::Send { message, .. } => {
                examples.check(&catalog, Direction::ClientToServer, message)
            }
            Step::Receive { message, .. } => {
                examples.check(&catalog, Direction::ServerToClient, message)
            }
            Step::Close { .. } => {}
        }
    }
    assert!(
        examples.failures.is_empty(),
        "{}",
        examples.failures.join("\n\n")
    );
    for direction in Direction::BOTH {
        let shown = examples.shown.remove(&direction).unwrap_or_default();
        let missing: Vec<String> = catalog
            .types(direction)
            .difference(&shown)
            .cloned()
            .collect();
        assert!(
            missing.is_empty(),
            "docs/protocol.md has no {} example of {missing:?}",
            direction.folder()
        );
    }
}

/// Fields whose values differ from run to run: the doc's value stands for whatever the server chose, the same
/// one everywhere it appears.
const VARYING: [&str; 3] = ["epoch", "session", "timestamp"];

/// The doc's stand-ins for varying values, mapped to the real ones. Distinct epochs and tokens in the doc must be
/// distinct on the server too; distinct timestamps need not (two messages may share a millisecond).
#[derive(Default)]
struct StandIns {
    real: HashMap<String, Value>,
    taken: HashMap<String, String>,
}

impl StandIns {
    /// Whether `actual` matches `expected` exactly, but for varying fields, which must be consistent stand-ins.
    fn matches(&mut self, expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
        match (expected, actual) {
            (Value::Object(want), Value::Object(got)) => {
                let want_keys: BTreeSet<&String> = want.keys().collect();
                let got_keys: BTreeSet<&String> = got.keys().collect();
                if want_keys != got_keys {
                    return Err(format!(
                        "{at}: fields {got_keys:?}, the doc has {want_keys:?}"
                    ));
                }
                for (key, value) in want {
                    let here = format!("{at}/{key}");
                    if VARYING.contains(&key.as_str()) && !value.is_object() {
                        self.stand_in(value, &got[key], &here)?;
                    } else {
                        self.matches(value, &got[key], &here)?;
                    }
                }
                Ok(())
            }
            (Value::Array(want), Value::Array(got)) if want.len() == got.len() => want
                .iter()
                .zip(got)
                .enumerate()
                .try_for_each(|(i, (w, g))| self.matches(w, g, &format!("{at}/{i}"))),
            _ if expected == actual => Ok(()),
            _ => Err(format!("{at}: got {actual}, the doc has {expected}")),
        }
    }

    fn stand_in(&mut self, doc: &Value, real: &Value, at: &str) -> Result<(), String> {
        let same_kind = doc.is_string() == real.is_string() && doc.is_u64() == real.is_u64();
        if !same_kind {
            return Err(format!("{at}: got {real}, the doc has {doc}"));
        }
        let (doc_key, real_key) = (doc.to_string(), real.to_string());
        match self.real.get(&doc_key) {
            Some(known) if known == real => Ok(()),
            Some(known) => Err(format!(
                "{at}: got {real}, but the doc's {doc} stood for {known} before"
            )),
            None => match self.taken.get(&real_key) {
                Some(other) if real.is_string() => Err(format!(
                    "{at}: {real} already stood for the doc's {other}, not {doc}"
                )),
                Some(_) => {
                    self.real.insert(doc_key.clone(), real.clone());
                    Ok(())
                }
                None => {
                    self.real.insert(doc_key.clone(), real.clone());
                    self.taken.insert(real_key, doc_key);
                    Ok(())
                }
            },
        }
    }

    /// A request from the doc with its stand-ins replaced by the real values they stood for.
    fn substitute(&self, message: &Value) -> Value {
        match message {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, value)| {
                        let value = match self.real.get(&value.to_string()) {
                            Some(real) if VARYING.contains(&key.as_str()) => real.clone(),
                            _ => self.substitute(value),
                        };
                        (key.clone(), value)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// The next thing a test client receives that is not a WebSocket Ping or Pong.
fn next_received(client: &mut TestClient, who: &str) -> Received {
    loop {
        match client.recv_timeout(std::time::Duration::from_secs(5)) {
            Some(Received::Ping(_) | Received::Pong(_)) => continue,
            Some(other) => return other,
            None => panic!("{who} received nothing within 5 s"),
        }
    }
}

#[test]
fn the_example_exchange_in_the_protocol_doc_is_what_a_server_does() {
    let catalog = Catalog::load();
    let server = TestServer::start();
    let mut clients: BTreeMap<String, TestClient> = BTreeMap::new();
    let mut closed = BTreeSet::new();
    let mut stand_ins = StandIns::default();
    for step in exchange_steps(&protocol_doc()) {
        match step {
            Step::Send { who, message } => {
                let client = clients.entry(who).or_insert_with(|| server.ws("/ws"));
                client.send_json(&stand_ins.substitute(&message));
            }
            Step::Receive { who, message } => {
                let client = clients
                    .get_mut(&who)
                    .unwrap_or_else(|| panic!("{who} receives before it connected"));
                let text = match next_received(client, &who) {
                    Received::Text(text) => text,
                    other => panic!("{who} expected {message}, got {other:?}"),
                };
                let actual: Value = serde_json::from_str(&text).expect("JSON from the server");
                catalog
                    .check(Direction::ServerToClient, &actual)
                    .unwrap_or_else(|e| panic!("{who}: {e}"));
                if let Err(e) = stand_ins.matches(&message, &actual, &who) {
                    panic!("the example exchange differs from the server: {e}\n  doc:    {message}\n  server: {actual}");
                }
            }
            Step::Close { who, code } => {
                let client = clients
                    .get_mut(&who)
                    .unwrap_or_else(|| panic!("{who} is closed before it connected"));
                match next_received(client, &who) {
                    Received::Close(got) => assert_eq!(got, Some(code), "{who}'s close code"),
                    other => panic!("{who} expected Close {code}, got {other:?}"),
                }
                closed.insert(who);
            }
        }
    }
    for (who, client) in &mut clients {
        if closed.contains(who) {
            continue;
        }
        let extra = client.recv_timeout(QUIET);
        assert!(
            extra.is_none(),
            "{who} got something the doc does not show: {extra:?}"
        );
    }
}

// ---------- every message the server sends, in both dialects ----------

/// The dialect a test client speaks, as the test drives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    V1,
    V2,
}

/// A test client and what the test knows of it.
struct Peer {
    label: &'static str,
    dialect: Dialect,
    client: TestClient,
}

impl Peer {
    /// Sends one request.
    fn send(&mut self, message: Value) {
        self.client.send_json(&message);
    }
}

/// A name for the form of a message, finer than its type: which branch of its schema, which error code.
fn shape(message: &Value) -> String {
    let kind = message["type"].as_str().unwrap_or("?");
    match kind {
        "system" if message["error"] == true => {
            format!("system error {}", message["code"].as_str().unwrap_or("?"))
        }
        "joined" if message["replay"]["complete"] == true => "joined complete".to_owned(),
        "joined" => format!(
            "joined incomplete {}",
            message["replay"]["reason"].as_str().unwrap_or("?")
        ),
        "chat" if message["private"] == true => "chat private".to_owned(),
        "chat" => "chat room".to_owned(),
        "presence" if message.get("joined").is_some() => "presence joined".to_owned(),
        "presence" if message.get("left").is_some() => "presence left".to_owned(),
        "presence" => "presence count".to_owned(),
        "error" => format!("error {}", message["code"].as_str().unwrap_or("?")),
        other => other.to_owned(),
    }
}

/// Every message the session's clients received, validated, and the shapes seen per dialect.
struct Session<'c> {
    catalog: &'c Catalog,
    seen: BTreeSet<String>,
    types_seen: BTreeSet<String>,
    messages: usize,
}

impl<'c> Session<'c> {
    /// Nothing received yet.
    fn new(catalog: &'c Catalog) -> Self {
        Session {
            catalog,
            seen: BTreeSet::new(),
            types_seen: BTreeSet::new(),
            messages: 0,
        }
    }

    /// A new connection to the chat, which the test will drive as `dialect`.
    fn connect(&self, server: &TestServer, label: &'static str, dialect: Dialect) -> Peer {
        Peer {
            label,
            dialect,
            client: server.ws("/ws"),
        }
    }

    /// Validates a message `peer` received and records its shape.
    fn take(&mut self, peer: &Peer, text: &str) -> Value {
        let message: Value = serde_json::from_str(text).unwrap_or_else(|e| {
            panic!("{} got a frame that is not JSON ({e}): {text}", peer.label)
        });
        if let Err(e) = self.catalog.check(Direction::ServerToClient, &message) {
            panic!("{} got a message that its schema refuses: {e}", peer.label);
        }
        let kind = message["type"].as_str().unwrap_or_default().to_owned();
        if peer.dialect == Dialect::V1 {
            assert!(
                ["system", "chat", "pong"].contains(&kind.as_str()),
                "v1 client {} got a {kind}: {message}",
                peer.label
            );
        }
        let dialect = match peer.dialect {
            Dialect::V1 => "v1",
            Dialect::V2 => "v2",
        };
        self.seen.insert(format!("{dialect}: {}", shape(&message)));
        self.types_seen.insert(kind);
        self.messages += 1;
        message
    }

    /// The next message `peer` receives, which must have the shape `expected`.
    fn expect(&mut self, peer: &mut Peer, expected: &str) -> Value {
        let text = peer.client.recv_text();
        let message = self.take(peer, &text);
        assert_eq!(shape(&message), expected, "{}: {message}", peer.label);
        message
    }

    /// Reads everything `peer` has been sent until it is quiet, validating each message; returns the close code
    /// if the server closed it.
    fn drain(&mut self, peer: &mut Peer) -> Option<u16> {
        loop {
            match peer.client.recv_timeout(QUIET) {
                Some(Received::Text(text)) => {
                    self.take(peer, &text);
                }
                Some(Received::Ping(_) | Received::Pong(_)) => {}
                Some(Received::Close(code)) => return code,
                Some(Received::Eof) | None => return None,
                Some(other) => panic!("{} got {other:?}", peer.label),
            }
        }
    }
}

/// A `join` in `dialect`: with `v: 2`, or without `v` as the articles' page sends it.
fn join(user: &str, room: &str, dialect: Dialect) -> Value {
    match dialect {
        Dialect::V1 => json!({"type": "join", "userId": user, "room": room}),
        Dialect::V2 => json!({"type": "join", "userId": user, "room": room, "v": 2}),
    }
}

/// An epoch that is not `epoch`.
fn other_epoch(epoch: &str) -> String {
    let replacement = if epoch.starts_with('0') { "1" } else { "0" };
    format!("{replacement}{}", epoch.get(1..).unwrap_or_default())
}

/// More pings than the burst, in one write: the bucket runs dry and the rest are answered `rate_limited`.
fn flood(peer: &mut Peer) {
    let pings = vec![json!({"type": "ping"}).to_string(); 60];
    peer.client.send_texts_in_one_write(&pings);
}

/// The error a join gets on a node whose Redis (`--redis`) does not answer, since the name cannot be claimed
/// across the cluster: `unavailable`. The URL names a port nothing listens on, so no `redis-server` is needed.
fn cluster_unavailable(s: &mut Session) {
    let (v1, v2) = (Dialect::V1, Dialect::V2);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}").parse().expect("url");
    let server = TestServer::with_config(|c| c.redis = Some(url));
    let mut ann = s.connect(&server, "ann", v2);
    ann.send(join("ann", "lobby", v2));
    s.expect(&mut ann, "error unavailable");
    let mut bob = s.connect(&server, "bob", v1);
    bob.send(join("bob", "lobby", v1));
    s.expect(&mut bob, "system error unavailable");
}

/// The messages of crowded rooms and slow readers, on a server of their own: a room at its member limit
/// (`room_full`), a storm of arrivals summed up (`presence` with only a count), and members that fell behind and
/// find, when they read again, that the history no longer holds all they missed (`lagged`).
fn crowded_rooms(s: &mut Session) {
    let (v1, v2) = (Dialect::V1, Dialect::V2);
    let server = TestServer::with_config(|c| {
        c.max_queued_bytes = 64 * 1024;
        c.max_frames_per_sec = 0;
        c.max_bytes_per_sec = 0;
        c.chat.history_len = 2;
        c.chat.max_room_members = 40;
        c.chat.rate_per_sec = 1e6;
        c.chat.rate_burst = 1_000_000;
        c.chat.rate_bytes_per_sec = 0.0;
        c.chat.room_rate_bytes_per_sec = 0.0;
    });
    let mut watcher = s.connect(&server, "watcher", v2);
    watcher.send(join("watcher", "crowd", v2));
    s.expect(&mut watcher, "system");
    s.expect(&mut watcher, "joined complete");
    // Thirty-nine arrivals in one write: the watcher is told of the first sixteen one by one, then of the rest in
    // a summary at the end of the server's turn (or of its few turns).
    let mut crowd = s.connect(&server, "crowd", v2);
    let joins: Vec<String> = (0..39)
        .map(|i| join(&format!("member{i}"), "crowd", v2).to_string())
        .collect();
    let crowd_members: Vec<Peer> = (0..39).map(|_| s.connect(&server, "member", v2)).collect();
    drop(crowd);
    for (mut member, frame) in crowd_members.into_iter().zip(joins) {
        member.client.send_text(&frame);
        std::mem::forget(member);
    }
    crowd = s.connect(&server, "late", v2);
    crowd.send(join("late", "crowd", v2));
    s.expect(&mut crowd, "error room_full");
    let mut late_v1 = s.connect(&server, "late_v1", v1);
    late_v1.send(join("late_v1", "crowd", v1));
    s.expect(&mut late_v1, "system error room_full");
    assert_eq!(s.drain(&mut watcher), None);

    // Two members that stop reading while a sender pours 10 MB into their room: they fall behind (their queues
    // pass 64 KiB), and when they read again the history of two no longer holds what they missed.
    let mut slow = s.connect(&server, "slow", v2);
    slow.send(join("slow", "busy", v2));
    s.expect(&mut slow, "system");
    s.expect(&mut slow, "joined complete");
    let mut slow_v1 = s.connect(&server, "slow_v1", v1);
    slow_v1.send(join("slow_v1", "busy", v1));
    s.expect(&mut slow_v1, "system");
    s.expect(&mut slow, "system");
    s.expect(&mut slow, "presence joined");
    let mut sender = s.connect(&server, "sender", v2);
    sender.send(join("sender", "busy", v2));
    s.expect(&mut sender, "system");
    s.expect(&mut sender, "joined complete");
    let sender_reads = sender.client.stream.try_clone().expect("clone");
    let reader = std::thread::spawn(move || {
        let mut sink = sender_reads;
        let _ = sink.set_read_timeout(Some(std::time::Duration::from_secs(3)));
        let mut buf = vec![0u8; 1 << 16];
        while matches!(std::io::Read::read(&mut sink, &mut buf), Ok(n) if n > 0) {}
    });
    let content = "x".repeat(4000);
    let frames: Vec<String> = (0..50)
        .map(|_| json!({"type": "chat", "content": content}).to_string())
        .collect();
    for _ in 0..50 {
        sender.client.send_texts_in_one_write(&frames);
    }
    for peer in [&mut slow, &mut slow_v1] {
        assert_eq!(s.drain(peer), None, "{} was closed", peer.label);
    }
    assert!(s.seen.contains("v2: error lagged"), "no lagged for v2");
    assert!(
        s.seen.contains("v1: system error lagged"),
        "no lagged for v1"
    );
    drop(sender);
    let _ = reader.join();
}

/// The refusals of a server that requires tokens, in both forms: `unauthorized` (then Close 4003) and `forbidden`.
fn signed_in(s: &mut Session) {
    use jsonwebtoken::{encode, EncodingKey, Header};
    const SECRET: &[u8] = b"schema-tests-secret-0123456789abcdef";
    let server = TestServer::with_config(|c| {
        c.auth = Some(roomcast::auth::Verifier::hs256(SECRET).expect("secret"));
    });
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 600;
    let token = |sub: &str| {
        encode(
            &Header::default(),
            &json!({"sub": sub, "exp": exp, "rooms": ["lobby"]}),
            &EncodingKey::from_secret(SECRET),
        )
        .expect("encode")
    };
    for (dialect, form) in [(Dialect::V2, "error"), (Dialect::V1, "system error")] {
        let mut peer = s.connect(&server, "signed", dialect);
        let mut frame = join("mallory", "lobby", dialect);
        frame["token"] = json!(token("ann"));
        peer.send(frame);
        s.expect(&mut peer, &format!("{form} forbidden"));
        let mut frame = join("ann", "staff", dialect);
        frame["token"] = json!(token("ann"));
        peer.send(frame);
        s.expect(&mut peer, &format!("{form} forbidden"));
        let mut stranger = s.connect(&server, "stranger", dialect);
        stranger.send(join("eve", "lobby", dialect));
        s.expect(&mut stranger, &format!("{form} unauthorized"));
        assert_eq!(s.drain(&mut stranger), Some(4003));
    }
}

#[test]
fn every_message_the_server_sends_in_both_dialects_matches_its_schema() {
    let catalog = Catalog::load();
    let mut s = Session::new(&catalog);
    // A history of two makes a gap easy to reach; the burst stays the default 40, so a flood of 60 is limited.
    let server = TestServer::with_config(|c| c.chat.history_len = 2);
    let (v1, v2) = (Dialect::V1, Dialect::V2);

    // Joins: the joiner's line and `joined`; the others' line, and presence for v2 members only.
    let mut ann = s.connect(&server, "ann", v2);
    ann.send(join("ann", "lobby", v2));
    s.expect(&mut ann, "system");
    let ann_joined = s.expect(&mut ann, "joined complete");
    let epoch = ann_joined["epoch"].as_str().expect("epoch").to_owned();
    let ann_session = ann_joined["session"].as_str().expect("session").to_owned();

    let mut bob = s.connect(&server, "bob", v2);
    bob.send(join("bob", "lobby", v2));
    s.expect(&mut bob, "system");
    s.expect(&mut bob, "joined complete");
    s.expect(&mut ann, "system");
    s.expect(&mut ann, "presence joined");

    let mut vic = s.connect(&server, "vic", v1);
    vic.send(join("vic", "lobby", v1));
    s.expect(&mut vic, "system");
    for peer in [&mut ann, &mut bob] {
        s.expect(peer, "system");
        s.expect(peer, "presence joined");
    }

    // A room message: raw for v2, escaped for v1.
    ann.send(json!({"type": "chat", "content": "<b>hi</b> & 'you'"}));
    for peer in [&mut ann, &mut bob] {
        let chat = s.expect(peer, "chat room");
        assert_eq!(chat["content"], "<b>hi</b> & 'you'");
    }
    let chat = s.expect(&mut vic, "chat room");
    assert_eq!(chat["content"], "&lt;b&gt;hi&lt;/b&gt; &amp; &#39;you&#39;");

    // Private messages between every pair of dialects.
    bob.send(json!({"type": "dm", "to": "ann", "content": "psst"}));
    s.expect(&mut bob, "dm");
    s.expect(&mut ann, "dm");
    bob.send(json!({"type": "dm", "to": "vic", "content": "<i>psst</i>"}));
    s.expect(&mut bob, "dm");
    let private = s.expect(&mut vic, "chat private");
    assert_eq!(private["content"], "&lt;i&gt;psst&lt;/i&gt;");
    vic.send(json!({"type": "dm", "to": "bob", "content": "hi bob"}));
    s.expect(&mut vic, "chat private");
    s.expect(&mut bob, "dm");

    for peer in [&mut ann, &mut vic] {
        peer.send(json!({"type": "ping"}));
        s.expect(peer, "pong");
    }

    // Errors from joined connections: `error` for v2, a system line with the code for v1.
    let too_long = "x".repeat(4001);
    for (peer, form) in [(&mut bob, "error"), (&mut vic, "system error")] {
        for (frame, code) in [
            (json!("nope"), "invalid_json"),
            (json!({"type": "shout"}), "unknown_type"),
            (json!({"type": "chat", "content": ""}), "invalid_field"),
            (json!({"type": "chat", "content": too_long}), "too_long"),
            (
                json!({"type": "dm", "to": "ghost", "content": "x"}),
                "not_online",
            ),
        ] {
            match frame.as_str() {
                Some(text) => peer.client.send_text(text),
                None => peer.send(frame),
            }
            s.expect(peer, &format!("{form} {code}"));
        }
    }
    // name_taken: the form follows the failed join's own `v`.
    let mut eve = s.connect(&server, "eve", v2);
    eve.send(join("ann", "lobby", v2));
    s.expect(&mut eve, "error name_taken");
    let mut mal = s.connect(&server, "mal", v1);
    mal.send(join("ann", "lobby", v1));
    s.expect(&mut mal, "system error name_taken");
    // not_joined: v1 form for a connection that never joined, v2 form after a v2 join and a leave.
    mal.send(json!({"type": "chat", "content": "hello?"}));
    s.expect(&mut mal, "system error not_joined");
    bob.send(json!({"type": "leave"}));
    s.expect(&mut ann, "system");
    s.expect(&mut ann, "presence left");
    s.expect(&mut vic, "system");
    bob.send(json!({"type": "chat", "content": "anyone?"}));
    s.expect(&mut bob, "error not_joined");

    // Three more messages: seqs 2 to 4, of which the history keeps 3 and 4.
    for content in ["one", "two", "three"] {
        ann.send(json!({"type": "chat", "content": content}));
        s.expect(&mut ann, "chat room");
        s.expect(&mut vic, "chat room");
    }

    // Replays: a gap, another epoch, and a complete one that is also a reclaim.
    let mut zed = s.connect(&server, "zed", v2);
    let mut frame = join("zed", "lobby", v2);
    frame["since"] = json!({"epoch": epoch, "seq": 1});
    zed.send(frame);
    s.expect(&mut zed, "system");
    let joined = s.expect(&mut zed, "joined incomplete gap");
    assert_eq!(joined["replay"]["count"], 2);
    s.expect(&mut zed, "chat room");
    s.expect(&mut zed, "chat room");
    s.expect(&mut ann, "system");
    s.expect(&mut ann, "presence joined");
    s.expect(&mut vic, "system");

    let mut yan = s.connect(&server, "yan", v2);
    let mut frame = join("yan", "lobby", v2);
    frame["since"] = json!({"epoch": other_epoch(&epoch), "seq": 4});
    yan.send(frame);
    s.expect(&mut yan, "system");
    let joined = s.expect(&mut yan, "joined incomplete epoch");
    assert_eq!(joined["replay"]["count"], 2);
    s.expect(&mut yan, "chat room");
    s.expect(&mut yan, "chat room");

    let mut ann2 = s.connect(&server, "ann2", v2);
    let mut frame = join("ann", "lobby", v2);
    frame["session"] = json!(ann_session);
    frame["since"] = json!({"epoch": epoch, "seq": 3});
    ann2.send(frame);
    s.expect(&mut ann2, "system");
    let joined = s.expect(&mut ann2, "joined complete");
    assert_eq!(joined["replay"]["count"], 1);
    let replayed = s.expect(&mut ann2, "chat room");
    assert_eq!(replayed["seq"], 4);
    assert_eq!(s.drain(&mut ann), Some(4001), "the replaced connection");

    // rate_limited in both forms: bob's last join was v2, mal never joined.
    for (peer, form) in [(&mut bob, "error"), (&mut mal, "system error")] {
        flood(peer);
        assert_eq!(s.drain(peer), None, "{} was closed", peer.label);
        let limited = format!(
            "{}: {form} rate_limited",
            if form == "error" { "v2" } else { "v1" }
        );
        assert!(s.seen.contains(&limited), "{} saw no {limited}", peer.label);
    }

    // Whatever else anyone was sent is validated too.
    for peer in [&mut ann2, &mut vic, &mut eve, &mut zed, &mut yan] {
        assert_eq!(s.drain(peer), None, "{} was closed", peer.label);
    }

    crowded_rooms(&mut s);
    signed_in(&mut s);
    cluster_unavailable(&mut s);

    let mut required: BTreeSet<String> = [
        "v2: system",
        "v2: joined complete",
        "v2: joined incomplete gap",
        "v2: joined incomplete epoch",
        "v2: chat room",
        "v2: dm",
        "v2: presence joined",
        "v2: presence left",
        "v2: presence count",
        "v2: pong",
        "v1: system",
        "v1: chat room",
        "v1: chat private",
        "v1: pong",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for code in documented_error_codes() {
        required.insert(format!("v2: error {code}"));
        required.insert(format!("v1: system error {code}"));
    }
    let missing: Vec<&String> = required.difference(&s.seen).collect();
    assert!(missing.is_empty(), "the session never produced {missing:?}");
    let untested: Vec<String> = catalog
        .types(Direction::ServerToClient)
        .difference(&s.types_seen)
        .cloned()
        .collect();
    assert!(
        untested.is_empty(),
        "no message of type {untested:?} was received"
    );
    assert!(s.messages > 80, "only {} messages", s.messages);
}
