//! Git ref globs for `allowed_refs`: `*` within one path segment, `**` across segments.

/// Expands a pattern written without `refs/` to the branch namespace.
fn qualify(pattern: &str) -> String {
    if pattern.starts_with("refs/") {
        pattern.to_owned()
    } else {
        format!("refs/heads/{pattern}")
    }
}

/// Does `git_ref` match the `allowed_refs` pattern?
///
/// A pattern without `refs/` matches branch names (`main` means `refs/heads/main`). A `git_ref`
/// without `refs/` is taken as a branch name too: GitHub reports deployment refs bare, and a
/// bare name that is really a tag must not pass a branch-only policy by accident, nor a
/// branch pass a tag-only one (anyone who can push a branch could name it `v9`). Callers that
/// know a ref is a tag pass it as `refs/tags/<name>`.
pub fn ref_matches(pattern: &str, git_ref: &str) -> bool {
    let pattern = qualify(pattern);
    let git_ref = qualify(git_ref);
    let pattern: Vec<&str> = pattern.split('/').collect();
    let segments: Vec<&str> = git_ref.split('/').collect();
    match_segments(&pattern, &segments)
}

fn match_segments(pattern: &[&str], segments: &[&str]) -> bool {
    match pattern.split_first() {
        None => segments.is_empty(),
        // A trailing `**` matches everything inside (`release/**` is not `release` itself),
        // elsewhere it swallows zero or more whole segments, as in .gitignore.
        Some((&"**", [])) => !segments.is_empty(),
        Some((&"**", rest)) => {
            (0..=segments.len()).any(|skip| match_segments(rest, &segments[skip..]))
        }
        Some((first, rest)) => match segments.split_first() {
            Some((segment, remaining)) => {
                match_segment(first.as_bytes(), segment.as_bytes())
                    && match_segments(rest, remaining)
            }
            None => false,
        },
    }
}

/// `*` matches any run of characters inside one segment.
fn match_segment(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            backtrack = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            t = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Checks that a pattern can ever match a valid git ref; the error says why not.
pub(crate) fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("empty ref pattern".to_owned());
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "?[]\\~^:".contains(*c))
    {
        return Err(format!(
            "invalid character {c:?} in ref pattern {pattern:?} (only `*` and `**` are wildcards)"
        ));
    }
    if pattern.starts_with('/') || pattern.ends_with('/') || pattern.contains("//") {
        return Err(format!("ref pattern {pattern:?} has an empty path segment"));
    }
    for segment in pattern.split('/') {
        if segment.contains("**") && segment != "**" {
            return Err(format!(
                "`**` must be a whole path segment in ref pattern {pattern:?} (use `*` within a segment)"
            ));
        }
    }
    Ok(())
}
