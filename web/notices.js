// Plain-words messages above the conversation: errors (role="alert") and information
// (role="status"), each under a key so that a repeated problem replaces its notice.

export class Notices {
  /** @param {HTMLElement} container */
  constructor(container) {
    this.container = container;
  }

  /**
   * @param {string} key
   * @param {object} notice
   * @param {string} notice.text
   * @param {"error"|"info"} [notice.kind]
   * @param {{label: string, run: () => void}[]} [notice.actions]
   */
  show(key, { text, kind = "error", actions = [] }) {
    const node = document.createElement("div");
    node.className = `notice notice--${kind}`;
    node.dataset.key = key;
    node.setAttribute("role", kind === "error" ? "alert" : "status");
    const message = document.createElement("p");
    message.className = "notice__text";
    message.textContent = text;
    node.append(message);
    const buttons = document.createElement("div");
    buttons.className = "notice__actions";
    for (const action of actions) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "button button--small";
      button.textContent = action.label;
      button.addEventListener("click", () => {
        this.dismiss(key);
        action.run();
      });
      buttons.append(button);
    }
    const close = document.createElement("button");
    close.type = "button";
    close.className = "notice__close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    close.addEventListener("click", () => this.dismiss(key));
    buttons.append(close);
    node.append(buttons);
    const old = this._find(key);
    if (old) old.replaceWith(node);
    else this.container.append(node);
    return node;
  }

  has(key) {
    return this._find(key) !== null;
  }

  dismiss(key) {
    this._find(key)?.remove();
  }

  clear() {
    this.container.replaceChildren();
  }

  _find(key) {
    return [...this.container.children].find((n) => n.dataset.key === key) ?? null;
  }
}
