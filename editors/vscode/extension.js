// Starts `dsl lsp` over stdio for .dsl files (and spec .yaml files) — docs/EDITORS.md.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("dsl");
  const [command, ...args] = config.get("command", ["dsl", "lsp"]);
  const documentSelector = [{ scheme: "file", language: "dsl" }];
  if (config.get("yaml", true)) {
    documentSelector.push({ scheme: "file", language: "yaml" });
  }
  client = new LanguageClient(
    "dsl",
    "dsl language server",
    { command, args }, // stdio is the default transport
    { documentSelector }
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
