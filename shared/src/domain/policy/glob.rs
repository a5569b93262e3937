//! Git ref globs for `allowed_refs`: `*` within one path segment, `**` across segments; and
//! repository globs for `repos`: `owner/name` with `*` inside either half.

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

/// Does `repo` (`owner/name`) match the `repos` pattern? Both halves compare
/// case-insensitively, as GitHub treats owner and repository names.
pub fn repo_matches(pattern: &str, repo: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let repo = repo.to_ascii_lowercase();
    match (pattern.split_once('/'), repo.split_once('/')) {
        (Some((po, pn)), Some((ro, rn))) => {
            match_segment(po.as_bytes(), ro.as_bytes())
                && match_segment(pn.as_bytes(), rn.as_bytes())
        }
        _ => false,
    }
}

/// Can some repository match both `repos` patterns? Always decidable: each half is a string
/// with `*` wildcards, and two such languages meet exactly when their automata's product
/// reaches its accepting state.
pub(crate) fn repo_patterns_overlap(a: &str, b: &str) -> bool {
    let a = a.to_ascii_lowercase();
    let b = b.to_ascii_lowercase();
    match (a.split_once('/'), b.split_once('/')) {
        (Some((ao, an)), Some((bo, bn))) => {
            segments_overlap(ao.as_bytes(), bo.as_bytes())
                && segments_overlap(an.as_bytes(), bn.as_bytes())
        }
        _ => false,
    }
}

/// Is there a text both `*`-patterns match? A search over pairs of positions, one in each.
fn segments_overlap(p: &[u8], q: &[u8]) -> bool {
    let width = q.len() + 1;
    let mut seen = vec![false; (p.len() + 1) * width];
    let mut stack = vec![(0, 0)];
    while let Some((i, j)) = stack.pop() {
        let Some(slot) = seen.get_mut(i * width + j) else {
            continue;
        };
        if *slot {
            continue;
        }
        *slot = true;
        if i == p.len() && j == q.len() {
            return true;
        }
        let (pc, qc) = (p.get(i).copied(), q.get(j).copied());
        // A star may match nothing.
        if pc == Some(b'*') {
            stack.push((i + 1, j));
        }
        if qc == Some(b'*') {
            stack.push((i, j + 1));
        }
        match (pc, qc) {
            (Some(b'*'), Some(b'*')) => {}
            (Some(b'*'), Some(_)) => stack.push((i, j + 1)),
            (Some(_), Some(b'*')) => stack.push((i + 1, j)),
            (Some(x), Some(y)) if x == y => stack.push((i + 1, j + 1)),
            _ => {}
        }
    }
    false
}

/// Checks that a `repos` pattern has the shape of `owner/name`; the error says why not.
pub(crate) fn validate_repo_pattern(pattern: &str) -> Result<(), String> {
    const HELP: &str =
        "use `owner/name` with `*` as the only wildcard, e.g. \"acme/payments\" or \"acme/*\"";
    let Some((owner, name)) = pattern.split_once('/') else {
        return Err(format!(
            "repository pattern {pattern:?} is not of the form owner/name; {HELP}"
        ));
    };
    if name.contains('/') {
        return Err(format!(
            "repository pattern {pattern:?} has more than one '/'; {HELP}"
        ));
    }
    if owner.is_empty() || name.is_empty() {
        return Err(format!(
            "repository pattern {pattern:?} has an empty owner or name; {HELP}"
        ));
    }
    if let Some(c) = owner
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '*'))
    {
        return Err(format!(
            "invalid character {c:?} in the owner of repository pattern {pattern:?} (owners are letters, digits and '-'); {HELP}"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._*".contains(*c)))
    {
        return Err(format!(
            "invalid character {c:?} in the name of repository pattern {pattern:?} (names are letters, digits, '-', '.' and '_'); {HELP}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_patterns_overlap_when_one_repository_can_match_both() {
        let cases = [
            ("acme/payments", "acme/payments", true),
            ("acme/payments", "ACME/Payments", true),
            ("acme/*", "acme/payments", true),
            ("acme/pay*", "acme/*ments", true),
            ("acme/pay*", "acme/web*", false),
            ("*/api", "acme/*", true),
            ("acme/a*b", "acme/*c", false),
            ("acme/*-api", "acme/pay-*", true),
            ("acme/x", "other/x", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(repo_patterns_overlap(a, b), want, "{a} vs {b}");
            assert_eq!(repo_patterns_overlap(b, a), want, "{b} vs {a}");
        }
    }
}
