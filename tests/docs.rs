//! Docs are tested: every `lifeboat …` command in README.md, ARCHITECTURE.md
//! and runbooks/ parses with the real argument parser.

use std::path::Path;

use clap::Parser;
use lifeboat::cli::Cli;

/// Splits a shell line into words, honouring single and double quotes.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() || any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        out.push(cur);
    }
    out
}

/// `lifeboat …` commands inside fenced code blocks.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let l = line.trim().trim_start_matches("$ ");
        // `RUN_ID=$(lifeboat …)`: the command inside.
        let l = match l.split_once("$(lifeboat ") {
            Some((_, rest)) => format!("lifeboat {}", rest.split(')').next().unwrap_or_default()),
            None => l.to_string(),
        };
        let l = shell_vars_as_values(&l);
        let l = l.as_str();
        if in_code && l.starts_with("lifeboat ") {
            let l = l.split(" #").next().unwrap_or(l);
            let l = l.split(" | ").next().unwrap_or(l);
            let l = l.split(" && ").next().unwrap_or(l);
            let l = l.split(" > ").next().unwrap_or(l);
            out.push(l.trim().to_string());
        }
    }
    out
}

/// `"$ENV"` and `$RUN_ID` stand for values the reader's shell fills in:
/// "1" parses wherever a version, a name or an ID is expected.
fn shell_vars_as_values(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|n| n.is_ascii_uppercase()) {
            while chars.peek().is_some_and(|n| n.is_ascii_uppercase() || *n == '_') {
                chars.next();
            }
            out.push('1');
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn documented_commands_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for e in std::fs::read_dir(root.join("runbooks")).unwrap() {
        files.push(e.unwrap().path());
    }
    let mut checked = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for cmd in commands(&text) {
            if let Err(e) = Cli::try_parse_from(words(&cmd)) {
                panic!("{}: `{cmd}` does not parse:\n{e}", f.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} documented commands found");
}

#[test]
fn word_splitting() {
    assert_eq!(words(r#"lifeboat a "b c" 'd' """#), ["lifeboat", "a", "b c", "d", ""]);
    assert_eq!(shell_vars_as_values(r#"lifeboat run watch "$RUN_ID" --x $ENV"#), r#"lifeboat run watch "1" --x 1"#);
}

/// The README's IAM policy lists exactly the AWS actions the ec2 provider calls.
#[test]
fn the_iam_policy_lists_exactly_the_calls_the_ec2_provider_makes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source: String = std::fs::read_to_string(root.join("src/provider/ec2/mod.rs"))
        .unwrap()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let camel = |snake: &str| snake.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect::<String>();
    let mut called = std::collections::BTreeSet::new();
    for (client, service) in [(".ec2.", "ec2"), (".elb.", "elasticloadbalancing"), (".dns.", "route53")] {
        for (i, _) in source.match_indices(client) {
            let rest = &source[i + client.len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() && rest[name.len()..].starts_with('(') {
                called.insert(format!("{service}:{}", camel(&name)));
            }
        }
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let policy =
        readme.split("```json").nth(1).and_then(|p| p.split("```").next()).expect("an IAM policy in the README");
    let policy: serde_json::Value = serde_json::from_str(policy).unwrap();
    let listed: std::collections::BTreeSet<String> =
        policy["Statement"][0]["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    assert!(called.len() >= 10, "{called:?}");
    assert_eq!(listed, called, "README's IAM policy against the provider's calls");
}
