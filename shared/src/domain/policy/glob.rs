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

/// Whether `pattern` matches all of `segments`. Filled in from the end as a table of
/// "pattern suffix i matches segment suffix j", so several `**` cost O(patterns × segments)
/// instead of backtracking exponentially: the ref is chosen by whoever pushes the branch.
fn match_segments(pattern: &[&str], segments: &[&str]) -> bool {
    let (p_len, s_len) = (pattern.len(), segments.len());
    let width = s_len + 1;
    // Row `i` answers for `pattern[i..]`; the row past the end matches only no segments.
    let mut next: Vec<bool> = (0..width).map(|j| j == s_len).collect();
    let mut row = vec![false; width];
    for i in (0..p_len).rev() {
        for j in (0..width).rev() {
            row[j] = match pattern[i] {
                // A trailing `**` matches everything inside (`release/**` is not `release`
                // itself); elsewhere it swallows zero or more whole segments, as in .gitignore.
                "**" if i + 1 == p_len => j < s_len,
                "**" => next[j] || (j < s_len && row[j + 1]),
                first => {
                    j < s_len
                        && match_segment(first.as_bytes(), segments[j].as_bytes())
                        && next[j + 1]
                }
            };
        }
        std::mem::swap(&mut next, &mut row);
    }
    next[0]
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
